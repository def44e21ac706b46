//! The daemon's one loop: it owns the reconciler and the maps (through [`Shared`]) and
//! turns each event (signal, health result, ARP packet, timer, VRRP state, discovered
//! backends) into a call of one named handler below.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::{
    signal::unix::Signal,
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    DaemonError, Shared,
    backends::{can_serve, can_serve6, handle_health, reconcile},
};
use crate::{
    announce::arp::ArpSocket,
    config::{Announce, Settings, args::RunArgs},
    control::health::{HealthEvent, HealthSettings},
    net::iface::Interface,
    wire::arp::Arp,
};

/// The daemon's state outside [`Shared`]: what the handlers need besides the maps.
pub(super) struct Daemon {
    /// Asks the next-hop thread for a round (`nexthops`).
    pub(super) resolver: super::nexthops::Resolver,
    pub(super) args: RunArgs,
    pub(super) settings: Settings,
    pub(super) iface: Interface,
    /// The further interfaces, each with its ARP socket (their packets come through
    /// `Sources::other_arp`).
    pub(super) others: Vec<(Interface, Arc<ArpSocket>)>,
    /// Every attached interface, the first included: where next hops may lead.
    pub(super) all: Vec<Interface>,
    pub(super) health: Arc<HealthSettings>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) arp: Arc<ArpSocket>,
    pub(super) xdp_mode: &'static str,
    pub(super) started: Instant,
    /// The addresses xvip answers ARP for: the VIPs, and in full NAT a SNAT address that is
    /// not one of this node's own (the backends' replies must reach it).
    pub(super) vip_addrs: Vec<Ipv4Addr>,
    /// The same for IPv6 (NDP): the IPv6 VIPs and an IPv6 SNAT address not the node's own.
    pub(super) vip6_addrs: Vec<Ipv6Addr>,
    /// The NDP socket, when there are IPv6 addresses to announce (`--announce arp`).
    /// One per attached interface, in `all`'s order: the IPv6 SNAT address must be found
    /// from the masters' side too.
    pub(super) ndp: Vec<(Interface, Arc<crate::announce::ndp::NdpSocket>)>,
    /// The IPv6 backends' checkers (the configured set, reloaded by SIGHUP; discovery is
    /// IPv4 only).
    pub(super) checkers6: BTreeMap<SocketAddrV6, JoinHandle<()>>,
    pub(super) route_spec: Option<crate::announce::route::RouteSpec>,
    pub(super) checkers: BTreeMap<SocketAddrV4, JoinHandle<()>>,
    pub(super) health_tx: mpsc::Sender<HealthEvent>,
    /// Tells the VRRP task whether this node can serve (health-gated priority).
    pub(super) serve_tx: watch::Sender<bool>,
    pub(super) serve_rx: watch::Receiver<bool>,
    /// The same for the IPv6 instance: whether an IPv6 backend is healthy.
    pub(super) serve6_tx: watch::Sender<bool>,
    pub(super) serve6_rx: watch::Receiver<bool>,
    pub(super) discovery_report: crate::control::discovery::SharedReport,
    /// The last backend set discovery found: a SIGHUP keeps it (with the reloaded weights)
    /// rather than falling back to the static list until the API speaks again.
    pub(super) discovered: Option<BTreeSet<SocketAddrV4>>,
    /// The same for the IPv6 masters (an IPv6-only cluster's EndpointSlice).
    pub(super) discovered6: Option<BTreeSet<SocketAddrV6>>,
    /// The configured IPv6 backends (`settings.backends6` is the set in use: these, or the
    /// discovered ones with their weights).
    pub(super) static6: Vec<crate::config::BackendSpec6>,
    /// Gratuitous ARP rounds still to send after becoming VRRP master, and when.
    pub(super) garp_burst: u32,
    pub(super) garp_burst_at: tokio::time::Instant,
    pub(super) _vip_on_lo: Option<crate::dataplane::local::VipOnLo>,
    /// Conntrack sync (`--sync-key-file`), told of VRRP transitions.
    pub(super) sync: Option<Arc<crate::sync::SyncHandle>>,
    /// Other claimants of the VIPs seen on the wire (`announce::claims`).
    pub(super) claims: crate::announce::claims::Claims,
    /// Whether the (IPv4) election says this node holds the VIPs; announcing also needs
    /// that no other xvip outranking it claims them (`claims`).
    pub(super) vrrp_master: bool,
    /// The IPv4 election's live status (its priority goes into the ARP frames' mark).
    pub(super) vrrp_report: Option<crate::announce::vrrp::Report>,
    /// Whether a takeover notice to the known clients is going, per family (`takeover`).
    pub(super) telling: [Arc<std::sync::atomic::AtomicBool>; 2],
    /// What the tracked interfaces and the witness say (`track`): both VRRP instances listen.
    pub(super) fault_rx: watch::Receiver<crate::announce::vrrp::Tracked>,
    /// elect (#23): the running elections' configured priority, set again by SIGHUP.
    pub(super) vrrp_priority: Vec<crate::announce::vrrp::PrioritySetter>,
    /// The notify hooks (`--notify-exec`, `--notify-fifo`), told of every state change.
    pub(super) notifier: Option<crate::announce::vrrp::notify::Notifier>,
    /// The Services task's report (`--services`).
    pub(super) services_report: crate::services::watch::SharedReport,
    /// The IPv4 Service addresses the statuses give (`--services`): answered and announced
    /// exactly as the VIPs, by the same owner.
    pub(super) service_addrs: Vec<Ipv4Addr>,
    /// The IPv6 Service addresses (`--services`): answered (NDP) and advertised by the same
    /// owner as the IPv4 ones, the IPv4 election's master.
    pub(super) service6_addrs: Vec<std::net::Ipv6Addr>,
    /// The Services task's end of the channel, until it starts.
    pub(super) services_tx: Option<crate::services::watch::Announce>,
    /// The channel's other end (the status endpoint reads what is announced).
    pub(super) services_rx: Option<watch::Receiver<BTreeSet<std::net::IpAddr>>>,
}

/// Where the loop's events come from; kept apart from [`Daemon`] so a handler can take
/// `&mut Daemon` while the loop waits on these.
pub(super) struct Sources {
    pub(super) sigterm: Signal,
    pub(super) sigint: Signal,
    pub(super) sighup: Signal,
    pub(super) health: mpsc::Receiver<HealthEvent>,
    pub(super) garp: tokio::time::Interval,
    pub(super) resolve: tokio::time::Interval,
    /// Refreshes the ARP frames' mark and, while yielded, probes the VIP (`claims`).
    pub(super) claims: tokio::time::Interval,
    /// Reads the handshake counters for passive health.
    pub(super) passive: tokio::time::Interval,
    pub(super) vrrp: Option<mpsc::UnboundedReceiver<crate::announce::vrrp::State>>,
    /// The IPv6 VRRP instance's state changes.
    pub(super) vrrp6: Option<mpsc::UnboundedReceiver<crate::announce::vrrp::State>>,
    /// ARP packets from the further interfaces' sockets: (index in `Daemon::others`, packet).
    pub(super) other_arp: mpsc::Receiver<(usize, Arp)>,
    /// Neighbour solicitations from the NDP sockets: (index in `Daemon::ndp`, solicitation).
    pub(super) ndp_rx: mpsc::Receiver<(usize, crate::wire::ndp::Solicitation)>,
    /// Backend sets from the EndpointSlice watch (`--discover-from-kubeconfig`).
    pub(super) discovery: Option<mpsc::Receiver<BTreeSet<SocketAddr>>>,
    /// The Service addresses to announce (`--services`).
    pub(super) services: Option<watch::Receiver<BTreeSet<std::net::IpAddr>>>,
}

impl Sources {
    /// Takes a VRRP instance's state channel (`v6`: the IPv6 instance's): the loop listens
    /// to it from now on.
    pub fn listen_vrrp(&mut self, v6: bool) -> mpsc::UnboundedSender<crate::announce::vrrp::State> {
        let (tx, rx) = mpsc::unbounded_channel();
        *if v6 { &mut self.vrrp6 } else { &mut self.vrrp } = Some(rx);
        tx
    }
}

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
                    Some(state) => {
                        self.notify(state, false);
                        self.on_vrrp(state, false);
                    }
                    None => return Some("VRRP"),
                },
                state = recv_unbounded_opt(&mut src.vrrp6) => match state {
                    Some(state) => {
                        self.notify(state, true);
                        self.on_vrrp(state, true);
                    }
                    None => return Some("IPv6 VRRP"),
                },
                _ = &mut *endpoint => return Some("status endpoint"),
                _ = tokio::time::sleep_until(self.garp_burst_at), if self.garp_burst > 0 => {
                    self.on_garp_burst();
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

/// Passive health's tick: the handshake counters of the backends the data path forwards
/// to (a local backend's answers never pass it) fed to the tracker; a backend whose failed
/// handshakes in a row reach the limit leaves the table now.
fn on_passive_tick(shared: &Mutex<Shared>) {
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
