//! `xvip run`: the daemon's tasks wired together. One loop owns the reconciler and the maps;
//! health checkers, the ARP socket, timers and signals feed it.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lb_common::{CONFIG_FLAG_ICMP_ECHO, Config, Reason};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    arp::{ArpSocket, Interface, format_mac, next_hops},
    config::{Announce, ConfigError, HealthKind, RunArgs, Settings},
    dataplane::{Dataplane, DataplaneError},
    health::{self, CheckKind, HealthEvent, HealthSettings},
    maglev::slot_shares,
    reconcile::Reconciler,
    status::{BackendStatus, Status, StatusSource},
};

/// The compiled XDP object, embedded at build time (empty when built without it).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// Why the daemon stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The interface does not exist or is unusable (exit status 2).
    #[error(transparent)]
    Interface(#[from] crate::arp::ArpError),
    /// TLS material for the health checks is unusable (exit status 2).
    #[error(transparent)]
    Tls(#[from] health::TlsConfigError),
    /// Serving the node itself (VIP on lo, connect hook) failed.
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    /// The kernel side failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Pinned state or an attached program that is not this interface's xvip's.
    #[error(transparent)]
    Pins(#[from] crate::pins::PinError),
    /// The VRRP socket could not be set up.
    #[error(transparent)]
    Vrrp(#[from] crate::vrrp::VrrpError),
    /// Routed mode's routes could not be read or changed.
    #[error(transparent)]
    Route(#[from] crate::route::RouteError),
    /// Anything else at run time.
    #[error("{0}")]
    Runtime(String),
}

impl DaemonError {
    /// The process exit status: 2 for bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Interface(_) | Self::Tls(_) => 2,
            Self::Pins(e) => e.exit_code(),
            Self::Dataplane(
                DataplaneError::Attach { .. } | DataplaneError::PinnedMismatch { .. },
            ) => 2,
            _ => 1,
        }
    }
}

#[derive(Default, Clone)]
struct CheckStats {
    ok: u64,
    failed: u64,
    transitions: u64,
    last_latency: Option<Duration>,
    last_error: Option<String>,
}

struct Shared {
    dataplane: Dataplane,
    reconciler: Reconciler,
    checks: BTreeMap<SocketAddrV4, CheckStats>,
    swaps: u64,
    last_reconcile: Option<Duration>,
    last_detection: Option<Duration>,
    fail_open: bool,
    announcing: bool,
    /// Tracked flows, counted off the main loop (see `dataplane::count_conntrack`).
    conntrack_entries: Arc<std::sync::atomic::AtomicUsize>,
    /// Flows not confirmed yet, counted the same way.
    unconfirmed_entries: Arc<std::sync::atomic::AtomicUsize>,
    /// Each backend's next hop, from the route table at the last resolution round: ARP
    /// answers are matched against it without reading the route table per packet.
    next_hops: BTreeMap<SocketAddrV4, Ipv4Addr>,
    /// Routed mode's VIP routes (`--announce route`).
    route: Option<crate::route::RouteStatus>,
    /// The last route change failed: retried on the next tick rather than on every event.
    route_failed: bool,
}

/// Every backend's next hop, from one read of the route table.
fn backend_next_hops(r: &Reconciler, iface: &str) -> BTreeMap<SocketAddrV4, Ipv4Addr> {
    let backends: Vec<SocketAddrV4> = r.backends().keys().copied().collect();
    let hops = next_hops(iface, backends.iter().map(|a| *a.ip()));
    backends.into_iter().zip(hops).collect()
}

/// Builds the health-check settings from the configuration.
///
/// # Errors
/// Unusable TLS files.
pub fn health_settings(s: &Settings) -> Result<HealthSettings, DaemonError> {
    let h = &s.health;
    let kind = match h.kind {
        HealthKind::Https => CheckKind::Https {
            path: h.path.clone(),
            host: None,
            tls: health::tls_config(
                h.ca_file.as_deref(),
                h.cert_file.as_deref(),
                h.key_file.as_deref(),
                h.insecure_skip_verify,
            )?,
        },
        HealthKind::Tcp => CheckKind::Tcp,
        HealthKind::None => CheckKind::None,
    };
    Ok(HealthSettings {
        kind,
        interval: h.interval,
        timeout: h.timeout,
        rise: h.rise,
        fall: h.fall,
    })
}

/// Validates everything that can be validated without touching the kernel.
///
/// # Errors
/// The first bad setting.
pub fn check_config(args: &RunArgs) -> Result<Settings, DaemonError> {
    let s = args.resolve()?;
    health_settings(&s)?;
    check_snat_range(&s)?;
    Ok(s)
}

/// The SNAT ports must stay clear of this namespace's ephemeral ports when the SNAT address
/// is the node's own (see `config::check_snat_ephemeral`).
fn check_snat_range(s: &Settings) -> Result<(), ConfigError> {
    let ephemeral = std::fs::read_to_string(crate::config::LOCAL_PORT_RANGE)
        .ok()
        .and_then(|t| crate::config::parse_local_port_range(&t));
    crate::config::check_snat_ephemeral(s, &crate::local::local_addresses(), ephemeral)
}

/// Runs until SIGINT or SIGTERM.
///
/// # Errors
/// Startup failures leave the interface as it was.
pub async fn run(args: RunArgs) -> Result<(), DaemonError> {
    let settings = args.resolve()?;
    check_snat_range(&settings)?;
    let iface = Interface::lookup(&settings.interface)?;
    let hs = Arc::new(health_settings(&settings)?);
    if matches!(settings.health.kind, HealthKind::Https)
        && settings.health.ca_file.is_none()
        && !settings.health.insecure_skip_verify
    {
        log::info!("no --ca-file: API server certificates are not verified by the health checks");
    }

    // Pins are keyed by namespace and interface; another program in the way is refused here,
    // before anything is loaded.
    let pins = crate::pins::claim(&settings.pin_root, &iface)?;
    let mut dataplane =
        Dataplane::load_pinned(OBJECT, settings.conntrack_size, Some((&pins, &iface.name)))?;
    if dataplane.adopted() {
        log::info!(
            "adopted the pinned state in {} ({} tracked flows)",
            pins.display(),
            dataplane.conntrack_entries()
        );
    }
    let cfg = Config {
        snat_port_min: settings.snat_ports.0,
        snat_port_max: settings.snat_ports.1,
        flags: if settings.icmp_echo {
            CONFIG_FLAG_ICMP_ECHO
        } else {
            0
        },
        if_mac: iface.mac,
        _pad: [0; 2],
    };
    use crate::dataplane::MapStore;
    dataplane.set_config(&cfg)?;
    let mut reconciler = Reconciler::new(&settings);
    if dataplane.adopted() {
        // Keep backend indices and next-hop MACs: tracked flows name their backend by index.
        reconciler.adopt(&dataplane.present_backends());
    }
    reconciler.set_local_addresses(crate::local::local_addresses());
    mark_local_backends(&mut reconciler, iface.mac);
    // A backend that is this node is reached through the local stack, with the VIP on lo.
    let _vip_on_lo = if reconciler.backends().keys().any(|a| reconciler.is_local(a)) {
        let vips: Vec<Ipv4Addr> = settings.vips.iter().map(|v| v.addr).collect();
        let lo = crate::local::VipOnLo::install(&vips, &iface.name)?;
        log::info!("this node is a backend: the VIPs are on lo (arp_ignore=1, arp_announce=2)");
        Some(lo)
    } else {
        None
    };
    let arp = ArpSocket::open(&iface)?;
    // Resolve the backends' next hops before attaching, so the first table is not empty.
    resolve_before_attach(&arp, &iface, &mut reconciler, Duration::from_millis(500)).await;
    let known = reconciler
        .backends()
        .values()
        .filter(|b| b.mac.is_some())
        .count();
    log::info!(
        "{known} of {} backends' next hops resolved before attaching",
        reconciler.backends().len()
    );
    reconciler.apply(&mut dataplane, &[])?;
    // From here on a failure must not leave a hook or pins behind (unless they were adopted:
    // then the previous xvip's program keeps serving).
    let adopted = dataplane.adopted();
    let attached = (|| -> Result<&'static str, DaemonError> {
        if settings.local_connect {
            let cgroup = crate::local::cgroup_root()?;
            dataplane.attach_connect4(&cgroup, crate::local::netns_cookie()?)?;
        }
        Ok(dataplane.attach(&iface.name, settings.xdp_mode)?)
    })();
    let xdp_mode = match attached {
        Ok(m) => m,
        Err(e) => {
            if !adopted {
                let _ = dataplane.detach(&iface.name);
            }
            return Err(e);
        }
    };
    log::info!(
        "attached to {} ({xdp_mode} XDP), VIPs {}, {} backends, {:?} mode",
        iface.name,
        settings
            .vips
            .iter()
            .map(|v| format!("{}:{}", v.addr, v.port))
            .collect::<Vec<_>>()
            .join(" "),
        settings.backends.len(),
        settings.mode
    );

    let started = Instant::now();
    let conntrack_entries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(map) = dataplane.conntrack_handle() {
        crate::dataplane::count_conntrack(map, conntrack_entries.clone(), Duration::from_secs(2));
    }
    let unconfirmed_entries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(map) = dataplane.unconfirmed_handle() {
        crate::dataplane::count_live(
            map,
            Duration::from_nanos(lb_common::TCP_SYN_TIMEOUT_NS),
            unconfirmed_entries.clone(),
            Duration::from_secs(2),
        );
    }
    let shared = Arc::new(Mutex::new(Shared {
        conntrack_entries,
        unconfirmed_entries,
        next_hops: BTreeMap::new(),
        dataplane,
        reconciler,
        checks: BTreeMap::new(),
        swaps: 0,
        last_reconcile: None,
        last_detection: None,
        fail_open: false,
        // With VRRP, only the master answers ARP for the VIPs.
        // `--announce none` (per-node mode): never.
        announcing: settings.vrrp.is_none() && settings.announce == Announce::Arp,
        route: (settings.announce == Announce::Route).then(|| crate::route::RouteStatus {
            announced: false,
            table: settings.route_table,
            reason: Some(crate::route::Withdrawn::NotAttached.reason().into()),
            changes: 0,
        }),
        route_failed: false,
    }));
    let route_spec = (settings.announce == Announce::Route).then(|| crate::route::RouteSpec {
        vips: settings.vips.iter().map(|v| v.addr).collect(),
        ifindex: iface.index,
        table: settings.route_table,
    });
    if let Some(spec) = &route_spec {
        drop_stale_routes(spec);
    }

    let (vrrp_tx, mut vrrp_rx) = mpsc::unbounded_channel();
    let (serve_tx, serve_rx) = tokio::sync::watch::channel(true);
    let vrrp = match &settings.vrrp {
        Some(v) => {
            let vips: Vec<Ipv4Addr> = settings.vips.iter().map(|v| v.addr).collect();
            let h = crate::vrrp::spawn(v, &iface, &vips, serve_rx, vrrp_tx)?;
            log::info!(
                "VRRPv{} vrid {} from {}: priority {}, advertising every {:?}, preempt {}, {}",
                v.version.number(),
                v.vrid,
                iface.ipv4,
                v.priority,
                v.advert_interval,
                v.preempt,
                if v.peers.is_empty() {
                    "multicast".to_string()
                } else {
                    format!("unicast to {:?}", v.peers)
                }
            );
            Some(h)
        }
        None => None,
    };

    let discovery_report = crate::discovery::SharedReport::default();
    let status_source: StatusSource = {
        let shared = shared.clone();
        let settings = settings.clone();
        let xdp_mode = xdp_mode.to_string();
        let vrrp_report = vrrp.as_ref().map(|h| h.report());
        let discovery = settings
            .discover_from_kubeconfig
            .clone()
            .map(|kc| (kc, discovery_report.clone()));
        Arc::new(move || {
            let mut st = status_of(
                &shared.lock().expect("poisoned"),
                &settings,
                &xdp_mode,
                started,
            );
            st.vrrp = vrrp_report
                .as_ref()
                .and_then(|r| r.lock().ok().map(|v| v.clone()));
            st.discovery = discovery
                .as_ref()
                .and_then(|(kc, r)| r.lock().ok().map(|r| r.status(kc)));
            st
        })
    };
    let metrics = crate::status::serve(settings.metrics_addr, status_source)
        .await
        .map_err(|e| {
            DaemonError::Runtime(format!(
                "cannot serve metrics on {}: {e}",
                settings.metrics_addr
            ))
        })?;
    crate::status::record_addr(&iface.name, settings.metrics_addr);

    let (htx, mut hrx) = mpsc::channel::<HealthEvent>(1024);
    let mut checkers: BTreeMap<SocketAddrV4, tokio::task::JoinHandle<()>> = BTreeMap::new();
    for b in &settings.backends {
        checkers.insert(
            b.addr,
            health::spawn_checker(b.addr, hs.clone(), true, htx.clone()),
        );
    }

    // The addresses xvip answers ARP for: the VIPs, and in full NAT a SNAT address that is
    // not one of this node's own (the backends' replies must reach it).
    let mut vip_addrs: Vec<Ipv4Addr> = settings.vips.iter().map(|v| v.addr).collect();
    if settings.mode == crate::config::Mode::Fullnat
        && !vip_addrs.contains(&settings.snat_ip)
        && !crate::local::local_addresses().contains(&settings.snat_ip)
    {
        vip_addrs.push(settings.snat_ip);
    }
    let resolve_all = |shared: &Mutex<Shared>| {
        let targets: std::collections::BTreeSet<Ipv4Addr> = {
            let mut s = shared.lock().expect("poisoned");
            s.next_hops = backend_next_hops(&s.reconciler, &iface.name);
            s.next_hops.values().copied().collect()
        };
        for t in targets {
            if let Err(e) = arp.resolve(&iface, t) {
                log::warn!("ARP request for {t}: {e}");
            }
        }
    };
    resolve_all(&shared);
    if settings.vrrp.is_none()
        && settings.announce == Announce::Arp
        && let Err(e) = arp.announce(iface.mac, &vip_addrs)
    {
        log::warn!("gratuitous ARP: {e}");
    }

    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let mut garp = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.garp_interval,
        settings.garp_interval,
    );
    let mut resolve_tick = tokio::time::interval(Duration::from_secs(1));

    // Master discovery: the API's list replaces the static one (see discovery.rs).
    let (dtx, mut drx) = mpsc::channel(1);
    let discovery = settings.discover_from_kubeconfig.clone().map(|kc| {
        let shared = shared.clone();
        let candidates: crate::discovery::Candidates = Arc::new(move || {
            let s = shared.lock().expect("poisoned");
            s.reconciler
                .backends()
                .iter()
                .filter(|(_, b)| b.healthy)
                .map(|(a, _)| *a)
                .collect()
        });
        log::info!(
            "discovering masters with {} (list, then watch)",
            kc.display()
        );
        crate::discovery::spawn(kc, candidates, discovery_report.clone(), dtx)
    });

    // Gratuitous ARP rounds still to send after becoming VRRP master, and when.
    let mut garp_burst = 0u32;
    let mut garp_burst_at = tokio::time::Instant::now();
    loop {
        if let Some(spec) = &route_spec {
            sync_route(&shared, spec, false, false);
        }
        if vrrp.is_some() {
            let ok = can_serve(&shared);
            serve_tx.send_if_modified(|v| std::mem::replace(v, ok) != ok);
        }
        tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                match args.resolve() {
                    Ok(new) => {
                        let wanted: Vec<(SocketAddrV4, u32)> = new.backends.iter().map(|b| (b.addr, b.weight)).collect();
                        replace_backends(&shared, &mut checkers, &wanted, &hs, &htx, iface.mac, "SIGHUP");
                        resolve_all(&shared);
                    }
                    Err(e) => log::error!("SIGHUP: configuration rejected, keeping the current one: {e}"),
                }
            }
            Some(ev) = hrx.recv() => handle_health(&shared, ev),
            Some(found) = drx.recv(), if discovery.is_some() => {
                // Same steps as a SIGHUP reload; a static backend keeps its weight.
                let wanted: Vec<(SocketAddrV4, u32)> = found
                    .iter()
                    .map(|a| (*a, settings.backends.iter().find(|b| b.addr == *a).map_or(1, |b| b.weight)))
                    .collect();
                let current: Vec<(SocketAddrV4, u32)> = shared
                    .lock()
                    .expect("poisoned")
                    .reconciler
                    .backends()
                    .iter()
                    .map(|(a, b)| (*a, b.weight))
                    .collect();
                if current != wanted {
                    replace_backends(&shared, &mut checkers, &wanted, &hs, &htx, iface.mac, "discovery");
                    resolve_all(&shared);
                }
            }
            pkt = arp.recv() => match pkt {
                Ok(a) => {
                    let announcing = shared.lock().expect("poisoned").announcing;
                    if announcing {
                        for vip in &vip_addrs {
                            if let Some((reply, to)) = a.answer_for(*vip, iface.mac)
                                && let Err(e) = arp.send(&reply, to) { log::warn!("ARP reply: {e}"); }
                        }
                    }
                    learn_mac(&shared, a.sender_ip, a.sender_mac);
                }
                Err(e) => log::warn!("ARP socket: {e}"),
            },
            _ = garp.tick() => {
                if shared.lock().expect("poisoned").announcing
                    && let Err(e) = arp.announce(iface.mac, &vip_addrs) { log::warn!("gratuitous ARP: {e}"); }
            }
            _ = resolve_tick.tick() => {
                resolve_all(&shared);
                // Re-assert the routes: a flushed table (or a failed change) heals within a tick.
                if let Some(spec) = &route_spec {
                    sync_route(&shared, spec, false, true);
                }
            }
            Some(state) = vrrp_rx.recv(), if vrrp.is_some() => {
                let master = state == crate::vrrp::State::Master;
                shared.lock().expect("poisoned").announcing = master;
                garp_burst = 0;
                if master {
                    if let Err(e) = arp.announce(iface.mac, &vip_addrs) { log::warn!("gratuitous ARP: {e}"); }
                    garp_burst = crate::vrrp::GARP_BURST - 1;
                    garp_burst_at = tokio::time::Instant::now() + crate::vrrp::GARP_BURST_SPACING;
                }
            }
            _ = tokio::time::sleep_until(garp_burst_at), if garp_burst > 0 => {
                garp_burst -= 1;
                garp_burst_at += crate::vrrp::GARP_BURST_SPACING;
                if shared.lock().expect("poisoned").announcing
                    && let Err(e) = arp.announce(iface.mac, &vip_addrs) { log::warn!("gratuitous ARP: {e}"); }
            }
        }
    }

    // Stop announcing first, so neighbours stop sending here, then detach.
    shared.lock().expect("poisoned").announcing = false;
    if let Some(spec) = &route_spec {
        sync_route(&shared, spec, true, true);
        if !settings.keep_attached {
            // Keep forwarding while the BGP daemons withdraw the route and the router
            // moves this node's flows elsewhere.
            tokio::time::sleep(crate::route::WITHDRAW_GRACE).await;
        }
    }
    if let Some(v) = vrrp {
        let grace = settings
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
    for (_, h) in checkers {
        h.abort();
    }
    metrics.abort();
    crate::status::forget_addr(&iface.name);
    let mut s = shared.lock().expect("poisoned");
    if settings.keep_attached {
        s.dataplane.keep_attached();
        log::info!("left attached to {} (--keep-attached)", iface.name);
    } else {
        s.dataplane.detach(&iface.name)?;
        log::info!("detached from {}", iface.name);
    }
    Ok(())
}

/// Replaces the backend set (SIGHUP, discovery): flows to backends that stay are kept,
/// removed backends lose their checker, new ones get one, and the tables are rewritten.
fn replace_backends(
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
    mark_local_backends(&mut s.reconciler, mac);
    for (addr, _) in &removed {
        if let Some(h) = checkers.remove(addr) {
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

/// Gives backends on this node's own addresses the interface's MAC: they need no ARP.
fn mark_local_backends(r: &mut Reconciler, mac: [u8; 6]) {
    let locals: Vec<SocketAddrV4> = r
        .backends()
        .keys()
        .filter(|a| r.is_local(a))
        .copied()
        .collect();
    for a in locals {
        r.set_mac(a, mac);
    }
}

/// Asks for every backend's next hop and waits up to `within` for the answers.
async fn resolve_before_attach(
    arp: &ArpSocket,
    iface: &Interface,
    r: &mut Reconciler,
    within: Duration,
) {
    let hops = backend_next_hops(r, &iface.name);
    let pending = |r: &Reconciler| -> Vec<(SocketAddrV4, Ipv4Addr)> {
        hops.iter()
            .filter(|(a, _)| r.backends().get(a).is_some_and(|st| st.mac.is_none()))
            .map(|(a, hop)| (*a, *hop))
            .collect()
    };
    let targets: std::collections::BTreeSet<Ipv4Addr> =
        pending(r).into_iter().map(|(_, hop)| hop).collect();
    for hop in targets {
        let _ = arp.resolve(iface, hop);
    }
    let deadline = tokio::time::Instant::now() + within;
    while !pending(r).is_empty() {
        match tokio::time::timeout_at(deadline, arp.recv()).await {
            Ok(Ok(a)) => {
                for (backend, hop) in pending(r) {
                    if hop == a.sender_ip {
                        r.set_mac(backend, a.sender_mac);
                    }
                }
            }
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
}

fn learn_mac(shared: &Mutex<Shared>, ip: Ipv4Addr, mac: [u8; 6]) {
    let mut s = shared.lock().expect("poisoned");
    let hits: Vec<SocketAddrV4> = s
        .next_hops
        .iter()
        .filter(|(_, hop)| **hop == ip)
        .map(|(a, _)| *a)
        .collect();
    let mut changed = false;
    for a in hits {
        if s.reconciler.set_mac(a, mac) {
            log::info!("backend {a}: next hop {ip} is at {}", format_mac(&mac));
            changed = true;
        }
    }
    if changed {
        reconcile(&mut s, None, None);
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

fn status_of(s: &Shared, settings: &Settings, xdp_mode: &str, started: Instant) -> Status {
    let shares = slot_shares(s.reconciler.table(0));
    let indices: Vec<u32> = s.reconciler.backends().values().map(|b| b.index).collect();
    let snap = s.dataplane.snapshot(&indices).unwrap_or_default();
    let backends = s
        .reconciler
        .backends()
        .iter()
        .map(|(addr, b)| {
            let c = s.checks.get(addr).cloned().unwrap_or_default();
            let t = snap.backends.get(&b.index).copied().unwrap_or_default();
            BackendStatus {
                addr: addr.to_string(),
                index: b.index,
                weight: b.weight,
                healthy: b.healthy,
                mac: b.mac.map(|m| format_mac(&m)),
                slots: shares.get(&b.index).copied().unwrap_or(0),
                check_ms: c.last_latency.map(|d| d.as_secs_f64() * 1e3),
                last_error: c.last_error,
                checks_ok: c.ok,
                checks_failed: c.failed,
                transitions: c.transitions,
                packets: t.packets,
                bytes: t.bytes,
                new_flows: t.new_flows,
            }
        })
        .collect();
    Status {
        interface: settings.interface.clone(),
        xdp_mode: xdp_mode.into(),
        mode: format!("{:?}", settings.mode).to_lowercase(),
        vips: settings
            .vips
            .iter()
            .map(|v| format!("{}:{}", v.addr, v.port))
            .collect(),
        vip_traffic: settings
            .vips
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = snap.vips.get(i).copied().unwrap_or_default();
                crate::status::VipTraffic {
                    vip: format!("{}:{}", v.addr, v.port),
                    packets: c.packets,
                    bytes: c.bytes,
                    new_flows: c.new_flows,
                }
            })
            .collect(),
        table_size: settings.table_size,
        backends,
        reasons: {
            let (balanced, no_backend) = s.dataplane.connect4_counts();
            Reason::ALL
                .iter()
                .map(|r| {
                    (
                        r.name().to_string(),
                        snap.reasons.get(*r as usize).copied().unwrap_or(0),
                    )
                })
                .chain([
                    ("sock_connect_balanced".to_string(), balanced),
                    ("sock_connect_no_backend".to_string(), no_backend),
                ])
                .collect()
        },
        conntrack_entries: s
            .conntrack_entries
            .load(std::sync::atomic::Ordering::Relaxed),
        unconfirmed_entries: s
            .unconfirmed_entries
            .load(std::sync::atomic::Ordering::Relaxed),
        table_swaps: s.swaps,
        last_reconcile_ms: s.last_reconcile.map(|d| d.as_secs_f64() * 1e3),
        last_detection_ms: s.last_detection.map(|d| d.as_secs_f64() * 1e3),
        fail_open: s.fail_open,
        announcing: s.announcing,
        uptime_s: started.elapsed().as_secs_f64(),
        vrrp: None,
        discovery: None,
        route: s.route.clone(),
    }
}

/// Removes routes a previous xvip on this interface left that this one does not announce
/// (another table, a VIP no longer configured).
fn drop_stale_routes(spec: &crate::route::RouteSpec) {
    let stale: Vec<(Ipv4Addr, u32)> = match crate::route::ours(spec.ifindex) {
        Ok(r) => r
            .into_iter()
            .filter(|(vip, table)| *table != spec.table || !spec.vips.contains(vip))
            .collect(),
        Err(e) => {
            log::warn!("reading the routes a previous xvip left: {e}");
            return;
        }
    };
    for (vip, table) in stale {
        let old = crate::route::RouteSpec {
            vips: vec![vip],
            ifindex: spec.ifindex,
            table,
        };
        match crate::route::withdraw(&old) {
            Ok(()) => log::info!("removed a stale route {vip}/32 from table {table}"),
            Err(e) => log::warn!("stale route {vip}/32 table {table}: {e}"),
        }
    }
}

/// Puts the VIP routes in or takes them out as [`crate::route::decide`] says; `force`
/// repeats the change even if the state did not move (a tick, the stop).
fn sync_route(shared: &Mutex<Shared>, spec: &crate::route::RouteSpec, stopping: bool, force: bool) {
    let mut s = shared.lock().expect("poisoned");
    let healthy_backends = s
        .reconciler
        .backends()
        .values()
        .filter(|b| b.healthy && b.weight > 0)
        .count();
    let failed = s.route_failed;
    let Some(st) = s.route.as_mut() else {
        return;
    };
    let want = crate::route::decide(crate::route::RouteInput {
        attached: true,
        healthy_backends,
        stopping,
    });
    let retry = force || !failed;
    let result = match want {
        Ok(()) if (!st.announced && retry) || force => crate::route::announce(spec),
        Err(_) if (st.announced && retry) || force => crate::route::withdraw(spec),
        _ => return,
    };
    let (was, was_reason) = (st.announced, st.reason.clone());
    match (result, want) {
        (Ok(()), Ok(())) => {
            st.announced = true;
            st.reason = None;
        }
        (Ok(()), Err(why)) => {
            st.announced = false;
            st.reason = Some(why.reason().into());
        }
        (Err(e), _) => {
            if !failed {
                log::error!("routed mode: {e}");
            }
            // A failed withdrawal may have left some routes: still counted as announced.
            st.announced = want.is_err() && st.announced;
            st.reason = Some(e.to_string());
            s.route_failed = true;
            return;
        }
    }
    if st.announced != was || st.reason != was_reason {
        st.changes += 1;
        if st.announced {
            tracing::info!(
                table = spec.table,
                "route announced: {:?}/32 in table {}",
                spec.vips,
                spec.table
            );
        } else {
            tracing::info!(
                table = spec.table,
                reason = st.reason.as_deref().unwrap_or(""),
                "route withdrawn from table {}: {}",
                spec.table,
                st.reason.as_deref().unwrap_or("")
            );
        }
    }
    s.route_failed = false;
}
