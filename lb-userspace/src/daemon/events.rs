//! The daemon's one loop: it owns the reconciler and the maps (through [`Shared`]) and
//! turns each event (signal, health result, ARP packet, timer, VRRP state, discovered
//! backends) into a call of one named handler below.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{DaemonError, Shared, startup::Up};
use crate::{
    arp::{Arp, ArpSocket, Interface},
    config::{Announce, RunArgs, Settings},
    health::{self, HealthEvent, HealthSettings},
};

/// The daemon's state outside [`Shared`]: what the handlers need besides the maps.
pub(super) struct Daemon {
    pub args: RunArgs,
    pub settings: Settings,
    pub iface: Interface,
    /// The further interfaces, each with its ARP socket (their packets come through
    /// `Sources::other_arp`).
    others: Vec<(Interface, Arc<ArpSocket>)>,
    /// Every attached interface, the first included: where next hops may lead.
    all: Vec<Interface>,
    pub health: Arc<HealthSettings>,
    pub shared: Arc<Mutex<Shared>>,
    pub arp: Arc<ArpSocket>,
    pub xdp_mode: &'static str,
    pub started: Instant,
    /// The addresses xvip answers ARP for: the VIPs, and in full NAT a SNAT address that is
    /// not one of this node's own (the backends' replies must reach it).
    vip_addrs: Vec<Ipv4Addr>,
    route_spec: Option<crate::route::RouteSpec>,
    checkers: BTreeMap<SocketAddrV4, JoinHandle<()>>,
    health_tx: mpsc::Sender<HealthEvent>,
    /// Tells the VRRP task whether this node can serve (health-gated priority).
    serve_tx: watch::Sender<bool>,
    pub serve_rx: watch::Receiver<bool>,
    pub discovery_report: crate::discovery::SharedReport,
    /// The last backend set discovery found: a SIGHUP keeps it (with the reloaded weights)
    /// rather than falling back to the static list until the API speaks again.
    discovered: Option<BTreeSet<SocketAddrV4>>,
    /// Gratuitous ARP rounds still to send after becoming VRRP master, and when.
    garp_burst: u32,
    garp_burst_at: tokio::time::Instant,
    _vip_on_lo: Option<crate::local::VipOnLo>,
    /// Conntrack sync (`--sync-key-file`), told of VRRP transitions.
    pub sync: Option<Arc<crate::sync::SyncHandle>>,
}

/// Where the loop's events come from; kept apart from [`Daemon`] so a handler can take
/// `&mut Daemon` while the loop waits on these.
pub(super) struct Sources {
    sigterm: Signal,
    sigint: Signal,
    sighup: Signal,
    health: mpsc::Receiver<HealthEvent>,
    garp: tokio::time::Interval,
    resolve: tokio::time::Interval,
    vrrp: Option<mpsc::UnboundedReceiver<crate::vrrp::State>>,
    /// ARP packets from the further interfaces' sockets: (index in `Daemon::others`, packet).
    other_arp: mpsc::Receiver<(usize, Arp)>,
    /// Backend sets from the EndpointSlice watch (`--discover-from-kubeconfig`).
    pub discovery: Option<mpsc::Receiver<BTreeSet<SocketAddrV4>>>,
}

impl Sources {
    /// Takes the VRRP state channel: the loop listens to it from now on.
    pub fn listen_vrrp(&mut self) -> mpsc::UnboundedSender<crate::vrrp::State> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.vrrp = Some(rx);
        tx
    }
}

fn signal_of(kind: SignalKind) -> Result<Signal, DaemonError> {
    signal(kind).map_err(|e| DaemonError::Runtime(e.to_string()))
}

impl Daemon {
    pub fn new(args: RunArgs, up: Up) -> Result<(Self, Sources), DaemonError> {
        let Up {
            settings,
            iface,
            others,
            next_hops,
            health,
            dataplane,
            reconciler,
            arp,
            xdp_mode,
            vip_on_lo,
            started,
        } = up;
        let shared = super::tasks::shared_state(&settings, dataplane, reconciler);
        shared.lock().expect("poisoned").next_hops = next_hops;
        let others: Vec<(Interface, Arc<ArpSocket>)> =
            others.into_iter().map(|(i, a)| (i, Arc::new(a))).collect();
        let all: Vec<Interface> = std::iter::once(iface.clone())
            .chain(others.iter().map(|(i, _)| i.clone()))
            .collect();
        let (arp_tx, other_arp) = mpsc::channel(256);
        for (n, (i, sock)) in others.iter().enumerate() {
            super::tasks::forward_arp(n, i.name.clone(), sock.clone(), arp_tx.clone());
        }
        let mut vip_addrs: Vec<Ipv4Addr> = settings.vips.iter().map(|v| v.addr).collect();
        if settings.mode == crate::config::Mode::Fullnat
            && !vip_addrs.contains(&settings.snat_ip)
            && !crate::local::local_addresses().contains(&settings.snat_ip)
        {
            vip_addrs.push(settings.snat_ip);
        }
        let route_spec = (settings.announce == Announce::Route).then(|| crate::route::RouteSpec {
            vips: settings.vips.iter().map(|v| v.addr).collect(),
            ifindex: iface.index,
            table: settings.route_table,
        });
        if let Some(spec) = &route_spec {
            super::routed::drop_stale_routes(spec);
        }
        let (health_tx, health_rx) = mpsc::channel::<HealthEvent>(1024);
        let (serve_tx, serve_rx) = watch::channel(true);
        let sources = Sources {
            sigterm: signal_of(SignalKind::terminate())?,
            sigint: signal_of(SignalKind::interrupt())?,
            sighup: signal_of(SignalKind::hangup())?,
            health: health_rx,
            garp: tokio::time::interval_at(
                tokio::time::Instant::now() + settings.garp_interval,
                settings.garp_interval,
            ),
            resolve: tokio::time::interval(Duration::from_secs(1)),
            vrrp: None,
            other_arp,
            discovery: None,
        };
        let d = Self {
            args,
            settings,
            iface,
            others,
            all,
            health,
            shared,
            arp: Arc::new(arp),
            xdp_mode,
            started,
            vip_addrs,
            route_spec,
            checkers: BTreeMap::new(),
            health_tx,
            serve_tx,
            serve_rx,
            discovery_report: Default::default(),
            discovered: None,
            garp_burst: 0,
            garp_burst_at: tokio::time::Instant::now(),
            _vip_on_lo: vip_on_lo,
            sync: None,
        };
        Ok((d, sources))
    }

    /// One checker task per configured backend.
    pub fn start_checkers(&mut self) {
        for b in &self.settings.backends {
            self.checkers.insert(
                b.addr,
                health::spawn_checker(b.addr, self.health.clone(), true, self.health_tx.clone()),
            );
        }
    }

    /// The first next-hop round, and a gratuitous ARP when this node announces without VRRP.
    pub fn announce_at_start(&self) {
        self.resolve_next_hops();
        if self.settings.vrrp.is_none() && self.settings.announce == Announce::Arp {
            self.gratuitous_arp();
        }
    }

    /// Runs until SIGTERM or SIGINT.
    pub async fn event_loop(&mut self, mut src: Sources) {
        loop {
            if let Some(spec) = &self.route_spec {
                super::routed::sync_route(&self.shared, spec, false, false);
            }
            if src.vrrp.is_some() {
                let ok = can_serve(&self.shared);
                self.serve_tx
                    .send_if_modified(|v| std::mem::replace(v, ok) != ok);
            }
            let arp = self.arp.clone();
            tokio::select! {
                _ = src.sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
                _ = src.sigint.recv() => { log::info!("SIGINT: stopping"); break; }
                _ = src.sighup.recv() => self.on_sighup(),
                Some(ev) = src.health.recv() => handle_health(&self.shared, ev),
                Some(found) = recv_opt(&mut src.discovery) => self.on_discovered(&found),
                pkt = arp.recv() => match pkt {
                    Ok(a) => self.on_arp(&self.arp, self.iface.mac, &a),
                    Err(e) => log::warn!("ARP socket: {e}"),
                },
                Some((n, a)) = src.other_arp.recv() => {
                    let (i, sock) = &self.others[n];
                    self.on_arp(sock, i.mac, &a);
                }
                _ = src.garp.tick() => {
                    if self.announcing() {
                        self.gratuitous_arp();
                    }
                }
                _ = src.resolve.tick() => self.on_tick(),
                Some(state) = recv_unbounded_opt(&mut src.vrrp) => self.on_vrrp(state),
                _ = tokio::time::sleep_until(self.garp_burst_at), if self.garp_burst > 0 => {
                    self.on_garp_burst();
                }
            }
        }
    }

    fn announcing(&self) -> bool {
        self.shared.lock().expect("poisoned").announcing
    }

    /// On every attached interface (see `on_arp`).
    fn gratuitous_arp(&self) {
        if let Err(e) = self.arp.announce(self.iface.mac, &self.vip_addrs) {
            log::warn!("gratuitous ARP on {}: {e}", self.iface.name);
        }
        for (i, sock) in &self.others {
            if let Err(e) = sock.announce(i.mac, &self.vip_addrs) {
                log::warn!("gratuitous ARP on {}: {e}", i.name);
            }
        }
    }

    /// SIGHUP: the configuration read again; its backends (or, with discovery, the
    /// discovered set with the reloaded weights) replace the current ones.
    fn on_sighup(&mut self) {
        match self.args.resolve() {
            Ok(new) => {
                self.settings.backends = new.backends;
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

    /// Discovered addresses with their weights: a static backend's, else 1.
    fn weighted(&self, found: &BTreeSet<SocketAddrV4>) -> Vec<(SocketAddrV4, u32)> {
        found
            .iter()
            .map(|a| {
                let weight = self.settings.backends.iter().find(|b| b.addr == *a);
                (*a, weight.map_or(1, |b| b.weight))
            })
            .collect()
    }

    /// A backend set from discovery: the same steps as a SIGHUP reload; a static backend
    /// keeps its weight.
    fn on_discovered(&mut self, found: &BTreeSet<SocketAddrV4>) {
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
    fn on_arp(&self, sock: &ArpSocket, mac: [u8; 6], a: &Arp) {
        if self.announcing() {
            for vip in &self.vip_addrs {
                if let Some((reply, to)) = a.answer_for(*vip, mac)
                    && let Err(e) = sock.send(&reply, to)
                {
                    log::warn!("ARP reply: {e}");
                }
            }
        }
    }

    /// Every second: next hops resolved again, routes re-asserted (a flushed table, or a
    /// failed change, heals within a tick).
    fn on_tick(&self) {
        self.resolve_next_hops();
        if let Some(spec) = &self.route_spec {
            super::routed::sync_route(&self.shared, spec, false, true);
        }
    }

    /// A VRRP transition: a master announces (and sends a burst of gratuitous ARP), a backup
    /// stops.
    fn on_vrrp(&mut self, state: crate::vrrp::State) {
        let master = state == crate::vrrp::State::Master;
        self.shared.lock().expect("poisoned").announcing = master;
        if let Some(s) = &self.sync {
            s.set_master(master);
        }
        self.garp_burst = 0;
        if master {
            self.gratuitous_arp();
            self.garp_burst = crate::vrrp::GARP_BURST - 1;
            self.garp_burst_at = tokio::time::Instant::now() + crate::vrrp::GARP_BURST_SPACING;
        }
    }

    fn on_garp_burst(&mut self) {
        self.garp_burst -= 1;
        self.garp_burst_at += crate::vrrp::GARP_BURST_SPACING;
        if self.announcing() {
            self.gratuitous_arp();
        }
    }

    /// Every backend's next hop from the kernel's route and neighbour tables (the kernel
    /// resolves missing and stale neighbours itself); the table is rewritten when one moved.
    fn resolve_next_hops(&self) {
        let mut s = self.shared.lock().expect("poisoned");
        let st = &mut *s;
        if super::startup::refresh_next_hops(&mut st.reconciler, &self.all, &mut st.next_hops) {
            reconcile(st, None, None);
        }
    }

    /// Stops announcing first, so neighbours stop sending here, then lets a backup or the
    /// routers take over, then detaches.
    pub async fn shut_down(
        self,
        vrrp: Option<crate::vrrp::Handle>,
        discovery: Option<JoinHandle<()>>,
        endpoint: JoinHandle<()>,
    ) -> Result<(), DaemonError> {
        self.shared.lock().expect("poisoned").announcing = false;
        if let Some(spec) = &self.route_spec {
            super::routed::sync_route(&self.shared, spec, true, true);
            if !self.settings.keep_attached {
                // Keep forwarding while the BGP daemons withdraw the route and the router
                // moves this node's flows elsewhere.
                tokio::time::sleep(crate::route::WITHDRAW_GRACE).await;
            }
        }
        if let Some(v) = vrrp {
            let grace = self
                .settings
                .vrrp
                .as_ref()
                .map(|s| s.handover_grace())
                .unwrap_or_default();
            if v.stop().await {
                // Priority 0 sent: keep forwarding while a backup takes over and announces.
                tokio::time::sleep(grace).await;
            }
        }
        if let Some(d) = discovery {
            d.abort();
        }
        for (_, h) in self.checkers {
            h.abort();
        }
        endpoint.abort();
        for i in &self.all {
            crate::status::forget_addr(&i.name);
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
    let removed = s.reconciler.set_backends(wanted.iter().copied());
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

fn handle_health(shared: &Mutex<Shared>, ev: HealthEvent) {
    let mut s = shared.lock().expect("poisoned");
    let st = s.checks.entry(ev.backend).or_default();
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
        if s.reconciler.set_health(ev.backend, t.healthy) {
            reconcile(&mut s, Some(ev.at), t.first_failure_at);
        }
    }
}

fn reconcile(s: &mut Shared, transition_at: Option<Instant>, first_failure: Option<Instant>) {
    let st = &mut *s;
    match st.reconciler.apply(&mut st.dataplane, &[]) {
        Ok(a) => {
            if a.fail_open && !st.fail_open {
                log::error!("no healthy backend: the table fails open to every reachable backend");
            }
            st.fail_open = a.fail_open;
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
fn can_serve(shared: &Mutex<Shared>) -> bool {
    let s = shared.lock().expect("poisoned");
    s.reconciler
        .backends()
        .values()
        .any(|b| b.healthy && b.weight > 0)
}
