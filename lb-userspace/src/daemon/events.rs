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

use super::{DaemonError, Shared};
use crate::{
    announce::arp::ArpSocket,
    config::{Announce, Settings, args::RunArgs},
    control::health::{self, HealthEvent, HealthSettings},
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
    pub(super) ndp_rx: mpsc::Receiver<(usize, crate::announce::ndp::Solicitation)>,
    /// Backend sets from the EndpointSlice watch (`--discover-from-kubeconfig`).
    pub(super) discovery: Option<mpsc::Receiver<BTreeSet<SocketAddr>>>,
    /// The Service addresses to announce (`--services`).
    pub(super) services: Option<watch::Receiver<BTreeSet<std::net::IpAddr>>>,
}

impl Sources {
    /// Takes the VRRP state channel: the loop listens to it from now on.
    pub fn listen_vrrp(&mut self) -> mpsc::UnboundedSender<crate::announce::vrrp::State> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.vrrp = Some(rx);
        tx
    }

    /// Takes the IPv6 VRRP instance's state channel.
    pub fn listen_vrrp6(&mut self) -> mpsc::UnboundedSender<crate::announce::vrrp::State> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.vrrp6 = Some(rx);
        tx
    }
}

impl Daemon {
    /// One checker task per configured backend.
    pub fn start_checkers(&mut self) {
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
    fn replace_backends6(&mut self) {
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
                        self.on_vrrp(state);
                    }
                    None => return Some("VRRP"),
                },
                state = recv_unbounded_opt(&mut src.vrrp6) => match state {
                    Some(state) => {
                        self.notify(state, true);
                        self.on_vrrp6(state);
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

    /// A VRRP state change to the notify hooks: the instance is named by its VRID (and
    /// family), the priority is the one advertised now.
    fn notify(&self, state: crate::announce::vrrp::State, v6: bool) {
        let (Some(n), Some(v)) = (&self.notifier, &self.settings.vrrp) else {
            return;
        };
        let priority = self
            .vrrp_report
            .as_ref()
            .filter(|_| !v6)
            .and_then(|r| r.lock().ok().map(|s| s.priority))
            .unwrap_or(v.priority);
        let name = format!("vrid{}{}", v.vrid, if v6 { "-ipv6" } else { "" });
        n.changed(&name, state, priority);
    }

    fn announcing(&self) -> bool {
        self.shared.lock().expect("poisoned").announcing
    }

    /// On every attached interface (see `on_arp`), for the VIPs and the Service addresses.
    fn gratuitous_arp(&self) {
        self.gratuitous_arp_for(&self.vip_addrs);
        self.gratuitous_arp_for(&self.service_addrs);
        // --services: the IPv6 Service addresses follow the same owner (svc).
        self.unsolicited_na_for(&self.service6_addrs);
    }

    fn gratuitous_arp_for(&self, addrs: &[Ipv4Addr]) {
        if addrs.is_empty() {
            return;
        }
        if let Err(e) = self.arp.announce(self.iface.mac, addrs) {
            log::warn!("gratuitous ARP on {}: {e}", self.iface.name);
        }
        for (i, sock) in &self.others {
            if let Err(e) = sock.announce(i.mac, addrs) {
                log::warn!("gratuitous ARP on {}: {e}", i.name);
            }
        }
    }

    /// The Service addresses changed (`--services`): new ones get a gratuitous round at once
    /// while this node announces; gone ones are no longer answered.
    fn on_services(&mut self, addrs: &BTreeSet<std::net::IpAddr>) {
        self.on_services6(addrs);
        let v4: Vec<Ipv4Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                std::net::IpAddr::V4(a) => Some(*a),
                std::net::IpAddr::V6(_) => None,
            })
            .filter(|a| !self.vip_addrs.contains(a))
            .collect();
        let new: Vec<Ipv4Addr> = v4
            .iter()
            .filter(|a| !self.service_addrs.contains(a))
            .copied()
            .collect();
        self.service_addrs = v4;
        // Routed mode: the Service /32s (and, svc, IPv6 /128s) ride with the VIPs' routes
        // (announced while this node can serve, withdrawn with them); gone ones are
        // withdrawn now.
        if let Some(spec) = &mut self.route_spec {
            let before = std::mem::take(&mut spec.vips);
            spec.vips = self
                .settings
                .vips
                .iter()
                .map(|v| std::net::IpAddr::V4(v.addr))
                .chain(self.service_addrs.iter().map(|a| (*a).into()))
                .chain(self.service6_addrs.iter().map(|a| (*a).into()))
                .collect();
            let gone: Vec<std::net::IpAddr> = before
                .into_iter()
                .filter(|a| !spec.vips.contains(a))
                .collect();
            if !gone.is_empty() {
                let old = crate::announce::route::RouteSpec {
                    vips: gone,
                    ..spec.clone()
                };
                if let Err(e) = crate::announce::route::withdraw(&old) {
                    log::warn!(
                        "routed mode: withdrawing Service routes {:?}: {e}",
                        old.vips
                    );
                }
            }
            super::routed::sync_route(&self.shared, spec, false, true);
            return;
        }
        if self.announcing() {
            self.gratuitous_arp_for(&new);
        }
    }

    fn announcing6(&self) -> bool {
        self.shared.lock().expect("poisoned").announcing6
    }

    /// Unsolicited neighbour advertisements for the IPv6 addresses (the gratuitous-ARP
    /// equivalent).
    fn unsolicited_na(&self) {
        self.unsolicited_na_for(&self.vip6_addrs);
    }

    fn unsolicited_na_for(&self, addrs: &[std::net::Ipv6Addr]) {
        if addrs.is_empty() {
            return;
        }
        for (i, ndp) in &self.ndp {
            if let Err(e) = ndp.announce(i.mac, addrs) {
                log::warn!("unsolicited neighbour advertisement on {}: {e}", i.name);
            }
        }
    }

    /// The IPv6 Service addresses changed (`--services`, svc): the NDP sockets hold their
    /// solicited-node groups, new ones are advertised at once while this node announces.
    /// Routed mode routes them as /128s (`on_services`).
    fn on_services6(&mut self, addrs: &BTreeSet<std::net::IpAddr>) {
        let v6: Vec<std::net::Ipv6Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                std::net::IpAddr::V6(a) => Some(*a),
                std::net::IpAddr::V4(_) => None,
            })
            .filter(|a| !self.vip6_addrs.contains(a))
            .collect();
        let new: Vec<std::net::Ipv6Addr> = v6
            .iter()
            .filter(|a| !self.service6_addrs.contains(a))
            .copied()
            .collect();
        if v6 != self.service6_addrs {
            for (i, ndp) in &self.ndp {
                if let Err(e) = ndp.set_extra(&v6) {
                    log::warn!("services: IPv6 Service addresses on {}: {e}", i.name);
                }
            }
        }
        self.service6_addrs = v6;
        if !new.is_empty() && self.announcing() {
            self.unsolicited_na_for(&new);
        }
    }

    /// A neighbour solicitation: answered for our IPv6 addresses while announcing them
    /// (the v6 VIPs by the IPv6 election's master; the IPv6 Service addresses, svc, by the
    /// IPv4 one's, which owns every Service address).
    fn on_ns(&self, n: usize, ns: &crate::announce::ndp::Solicitation) {
        let Some((i, ndp)) = self.ndp.get(n) else {
            return;
        };
        let na = self
            .announcing6()
            .then(|| ns.answer(&self.vip6_addrs, i.mac))
            .flatten()
            .or_else(|| {
                self.announcing()
                    .then(|| ns.answer(&self.service6_addrs, i.mac))
                    .flatten()
            });
        if let Some(na) = na {
            ndp.answer(ns, &na);
        }
    }

    /// Conntrack sync treats this node as master while either family's VRRP instance is
    /// (an IPv6-only node has only the IPv6 one): its live flows are then never
    /// overwritten by another node's records, and it sends the periodic refresh.
    fn sync_master(&self) {
        if let Some(s) = &self.sync {
            let sh = self.shared.lock().expect("poisoned");
            s.set_master(sh.announcing || sh.announcing6);
        }
    }

    /// A transition of the IPv6 VRRP instance: its master answers NDP for the IPv6 VIPs
    /// and sends unsolicited advertisements (now and in the burst), a backup stops.
    fn on_vrrp6(&mut self, state: crate::announce::vrrp::State) {
        let master = state == crate::announce::vrrp::State::Master;
        self.shared.lock().expect("poisoned").announcing6 = master;
        self.sync_master();
        if master {
            self.unsolicited_na();
            super::takeover::tell_known_clients(
                &self.shared,
                super::takeover::Senders::Ndp(self.ndp.clone(), self.vip6_addrs.clone()),
                &self.telling[1],
            );
            self.garp_burst = crate::announce::vrrp::GARP_BURST - 1;
            self.garp_burst_at =
                tokio::time::Instant::now() + crate::announce::vrrp::GARP_BURST_SPACING;
        }
    }

    /// SIGHUP: the configuration read again; its backends (or, with discovery, the
    /// discovered set with the reloaded weights) replace the current ones.
    fn on_sighup(&mut self) {
        match self.args.resolve() {
            Ok(new) => {
                super::startup::log_unapplied(&self.settings, &new);
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
                if self.settings.backends6 != wanted6 {
                    self.settings.backends6 = wanted6;
                    self.replace_backends6();
                    log::info!("SIGHUP: {} IPv6 backends", self.settings.backends6.len());
                }
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
    fn weighted(&self, found: &BTreeSet<SocketAddrV4>) -> Vec<(SocketAddrV4, u32)> {
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
    fn weighted6(&self, found: &BTreeSet<SocketAddrV6>) -> Vec<crate::config::BackendSpec6> {
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
    fn on_discovered(&mut self, found: &BTreeSet<SocketAddr>) {
        let v4: BTreeSet<SocketAddrV4> = found
            .iter()
            .filter_map(|a| match a {
                SocketAddr::V4(a) => Some(*a),
                SocketAddr::V6(_) => None,
            })
            .collect();
        let v6: BTreeSet<SocketAddrV6> = found
            .iter()
            .filter_map(|a| match a {
                SocketAddr::V6(a) => Some(*a),
                SocketAddr::V4(_) => None,
            })
            .collect();
        if !self.settings.vips6.is_empty() && !v6.is_empty() {
            let wanted6 = self.weighted6(&v6);
            self.discovered6 = Some(v6);
            if self.settings.backends6 != wanted6 {
                self.settings.backends6 = wanted6;
                self.replace_backends6();
                log::info!("discovery: {} IPv6 backends", self.settings.backends6.len());
            }
        }
        if !self.settings.vips.is_empty() && !v4.is_empty() {
            self.on_discovered4(&v4);
        }
    }

    /// An IPv4 backend set from discovery: the same steps as a SIGHUP reload; a static
    /// backend keeps its weight.
    fn on_discovered4(&mut self, found: &BTreeSet<SocketAddrV4>) {
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

    fn replace_backends(&mut self, wanted: &[(SocketAddrV4, u32)], why: &str) {
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

    /// An ARP packet on an interface (socket `sock`, MAC `mac`): answered for our
    /// addresses while announcing. Every attached interface answers, with its own MAC:
    /// clients may sit on any, and the masters reach the SNAT address (and the VIP) on
    /// theirs. Next hops are the kernel's business (`resolve_next_hops`), not learnt here.
    fn on_arp(&mut self, sock: &ArpSocket, mac: [u8; 6], a: &Arp) {
        self.on_claim(a);
        if self.announcing() {
            for vip in self.vip_addrs.iter().chain(&self.service_addrs) {
                if let Some((reply, to)) = a.answer_for(*vip, mac) {
                    sock.answer(&reply, to, a.sender_ip);
                }
            }
        }
    }

    /// Every second: routes re-asserted (a flushed table, or a failed change, heals within
    /// a tick). The next-hop thread keeps its own second.
    fn on_tick(&self) {
        if let Some(spec) = &self.route_spec {
            super::routed::sync_route(&self.shared, spec, false, true);
        }
    }

    /// An ARP packet that claims one of our VIPs from a MAC not ours (a gratuitous ARP, a
    /// reply): another xvip that outranks this node makes it stop answering, one it
    /// outranks gets a gratuitous round back, a foreign host is reported
    /// (`announce::claims`).
    fn on_claim(&mut self, a: &Arp) {
        if !self.vip_addrs.contains(&a.sender_ip)
            || a.sender_mac == self.iface.mac
            || self.others.iter().any(|(i, _)| i.mac == a.sender_mac)
        {
            return;
        }
        let holds = match self.settings.vrrp {
            Some(_) => self.vrrp_master,
            None => self.settings.announce == Announce::Arp,
        };
        let ours = self.mark();
        let now = std::time::Instant::now();
        let decision = self
            .claims
            .on_claim(now, a.sender_mac, a.sender_ip, a.mark, ours, holds);
        {
            let mut s = self.shared.lock().expect("poisoned");
            s.claims = Some(self.claims.status(now));
            if decision == crate::announce::claims::Decision::Yield {
                s.announcing = false;
            }
        }
        match decision {
            crate::announce::claims::Decision::Yield => {
                self.garp_burst = 0;
                self.sync_master();
            }
            crate::announce::claims::Decision::Reassert => self.gratuitous_arp(),
            crate::announce::claims::Decision::None => {}
        }
    }

    /// What this node's ARP frames say of it: its VRID, its election's priority now and its
    /// primary address (none without VRRP).
    fn mark(&self) -> Option<crate::wire::arp::Mark> {
        let v = self.settings.vrrp.as_ref()?;
        let priority = self
            .vrrp_report
            .as_ref()
            .and_then(|r| r.lock().ok().map(|s| s.priority))
            .filter(|p| *p > 0)
            .unwrap_or(v.priority);
        Some(crate::wire::arp::Mark {
            priority,
            primary: self.iface.ipv4,
            vrid: v.vrid,
        })
    }

    /// Every `claims::PROBE`: the frames' mark follows the priority; a gratuitous round
    /// put off by a recent one is paid; while yielded, asks who has the VIP (the winner's
    /// answer keeps the yield), and once the winner has been silent for `claims::HOLD`
    /// answers again if the election still says so.
    fn on_claims_tick(&mut self) {
        let mark = self.mark();
        self.arp.set_mark(mark);
        for (_, sock) in &self.others {
            sock.set_mark(mark);
        }
        if self.claims.reassert_due(std::time::Instant::now()) && self.announcing() {
            self.gratuitous_arp();
        }
        if self.claims.yielded_to().is_none() {
            return;
        }
        let yielded = self.claims.yielded(std::time::Instant::now());
        if let Some(c) = &mut self.shared.lock().expect("poisoned").claims {
            c.yielded_to = self
                .claims
                .yielded_to()
                .map(|m| crate::net::iface::format_mac(&m));
        }
        if yielded {
            if let Some(vip) = self.vip_addrs.first() {
                let probe = Arp::request(self.iface.mac, self.iface.ipv4, *vip);
                if let Err(e) = self.arp.send(&probe, [0xff; 6]) {
                    log::debug!("ARP probe for {vip}: {e}");
                }
            }
        } else if self.vrrp_master {
            self.on_vrrp(crate::announce::vrrp::State::Master);
        }
    }

    /// A VRRP transition: a master announces (and sends a burst of gratuitous ARP), a backup
    /// stops. A master that has yielded to another xvip claiming the VIPs (`on_claim`) waits
    /// until that one is gone.
    fn on_vrrp(&mut self, state: crate::announce::vrrp::State) {
        self.vrrp_master = state == crate::announce::vrrp::State::Master;
        if !self.vrrp_master {
            self.claims.end_yield();
        }
        let master = self.vrrp_master && !self.claims.yielded(std::time::Instant::now());
        self.shared.lock().expect("poisoned").announcing = master;
        self.sync_master();
        self.garp_burst = 0;
        if master {
            self.gratuitous_arp();
            self.tell_known_clients();
            self.garp_burst = crate::announce::vrrp::GARP_BURST - 1;
            self.garp_burst_at =
                tokio::time::Instant::now() + crate::announce::vrrp::GARP_BURST_SPACING;
        }
    }

    /// The IPv4 clients in the flow table told the new owner directly (`takeover`).
    fn tell_known_clients(&self) {
        let socks = std::iter::once((self.iface.clone(), self.arp.clone()))
            .chain(self.others.iter().cloned())
            .collect();
        super::takeover::tell_known_clients(
            &self.shared,
            super::takeover::Senders::Arp(socks, self.vip_addrs.clone()),
            &self.telling[0],
        );
    }

    fn on_garp_burst(&mut self) {
        self.garp_burst -= 1;
        self.garp_burst_at += crate::announce::vrrp::GARP_BURST_SPACING;
        if self.announcing() {
            self.gratuitous_arp();
        }
        if self.announcing6() {
            self.unsolicited_na();
        }
    }

    /// Every backend's next hop from the kernel's route and neighbour tables (the kernel
    /// resolves missing and stale neighbours itself), on the next-hop thread, soon; the
    /// table is rewritten there when one moved.
    fn resolve_next_hops(&self) {
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
fn passive_check_result(s: &mut Shared, addr: SocketAddr, ok: bool, rise: u32) -> bool {
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

/// A check result of an IPv6 backend: counted, and a transition reconciles (the IPv6 VIPs'
/// tables) as for IPv4.
fn handle_health6(shared: &Mutex<Shared>, backend: SocketAddrV6, ev: &HealthEvent, rise: u32) {
    let mut s = shared.lock().expect("poisoned");
    if passive_check_result(&mut s, backend.into(), ev.result.is_ok(), rise) {
        reconcile(&mut s, Some(ev.at), None);
    }
    // A result of a checker stopped by a reload: that backend is gone.
    let Some((st, healthy)) = s.checks6.get_mut(&backend) else {
        return;
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
    if let Some(t) = &ev.transition {
        st.transitions += 1;
        *healthy = t.healthy;
        let t = t.clone();
        if t.healthy {
            tracing::info!(backend = %backend, reason = %t.reason, "backend {backend} is up: {}", t.reason);
        } else {
            tracing::warn!(backend = %backend, reason = %t.reason, "backend {backend} is down: {}", t.reason);
        }
        if passive_keeps_out(&mut s, backend.into(), t.healthy) {
            return;
        }
        if s.reconciler.set_health(backend, t.healthy) {
            reconcile(&mut s, Some(ev.at), t.first_failure_at);
        }
    }
}

/// A check transition of a backend passive health took out: up waits for passive health's
/// own count of successes (returns true: keep it out); down hands it back to the check.
fn passive_keeps_out(s: &mut Shared, addr: SocketAddr, healthy: bool) -> bool {
    if healthy {
        s.passive_down.contains_key(&addr)
    } else {
        s.passive_down.remove(&addr);
        false
    }
}

fn handle_health(shared: &Mutex<Shared>, ev: HealthEvent, rise: u32) {
    let backend = match ev.backend {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => return handle_health6(shared, a, &ev, rise),
    };
    let mut s = shared.lock().expect("poisoned");
    if passive_check_result(&mut s, backend.into(), ev.result.is_ok(), rise) {
        reconcile(&mut s, Some(ev.at), None);
    }
    let st = s.checks.entry(backend).or_default();
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
        if t.healthy {
            tracing::info!(backend = %ev.backend, reason = %t.reason, "backend {} is up: {}", ev.backend, t.reason);
        } else {
            tracing::warn!(backend = %ev.backend, reason = %t.reason, "backend {} is down: {}", ev.backend, t.reason);
        }
        if passive_keeps_out(&mut s, ev.backend, t.healthy) {
            return;
        }
        if s.reconciler.set_health(backend, t.healthy) {
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
fn can_serve6(shared: &Mutex<Shared>, backends6: &[crate::config::BackendSpec6]) -> bool {
    let s = shared.lock().expect("poisoned");
    backends6
        .iter()
        .any(|b| b.weight > 0 && s.checks6.get(&b.addr).is_some_and(|(_, healthy)| *healthy))
}

fn can_serve(shared: &Mutex<Shared>) -> bool {
    let s = shared.lock().expect("poisoned");
    s.reconciler
        .backends()
        .values()
        .any(|b| b.healthy && b.weight > 0)
}
