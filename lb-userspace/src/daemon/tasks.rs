//! The tasks beside the loop, each started by one function: `Daemon::new` (the daemon's
//! state and the sources of its events, with the threads feeding them), the shared state
//! with its flow counters, the VRRP election, the status endpoint and master discovery.
//! (Health checkers are started by the loop's owner, `backends::Daemon::start_checkers`.)
//! This module uses the loop's types (`events`); the loop never calls back here.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::Duration,
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    DaemonError, Shared,
    backends::reconcile,
    startup::Up,
    state::{Daemon, Sources},
};
use crate::{
    announce::arp::ArpSocket,
    api::server::StatusSource,
    config::{Announce, Settings, args::RunArgs},
    control::health::HealthEvent,
    control::reconcile::Reconciler,
    dataplane::Dataplane,
    net::iface::Interface,
};

fn signal_of(kind: SignalKind) -> Result<Signal, DaemonError> {
    signal(kind).map_err(|e| DaemonError::Runtime(e.to_string()))
}

impl Daemon {
    /// The daemon's state and the sources of its events, with the threads that feed
    /// them (further interfaces' ARP, NDP, next hops) started.
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
        let shared = shared_state(&settings, dataplane, reconciler);
        shared.lock().expect("poisoned").next_hops = next_hops;
        let others: Vec<(Interface, Arc<ArpSocket>)> =
            others.into_iter().map(|(i, a)| (i, Arc::new(a))).collect();
        let all: Vec<Interface> = std::iter::once(iface.clone())
            .chain(others.iter().map(|(i, _)| i.clone()))
            .collect();
        let (arp_tx, other_arp) = mpsc::channel(256);
        for (n, (i, sock)) in others.iter().enumerate() {
            forward_arp(n, i.name.clone(), sock.clone(), arp_tx.clone());
        }
        let mut vip_addrs: Vec<Ipv4Addr> = settings.vips.iter().map(|v| v.addr).collect();
        if settings.mode == crate::config::Mode::Fullnat
            && !settings.snat_ip.is_unspecified()
            && !vip_addrs.contains(&settings.snat_ip)
            && !crate::dataplane::local::local_addresses().contains(&settings.snat_ip)
        {
            vip_addrs.push(settings.snat_ip);
        }
        let mut vip6_addrs: Vec<Ipv6Addr> = settings.vips6.iter().map(|v| v.addr).collect();
        if settings.mode == crate::config::Mode::Fullnat
            && let Some(snat) = settings.snat_ip6
            && !vip6_addrs.contains(&snat)
            && !crate::announce::ndp::all_addresses().contains(&snat)
        {
            vip6_addrs.push(snat);
        }
        vip6_addrs.dedup();
        let mut ndp = Vec::new();
        let (ndp_tx, ndp_rx) = mpsc::channel(256);
        // --services (svc): IPv6 Service addresses need the sockets without v6 VIPs too;
        // then a node without IPv6 only loses those (a warning), not its start.
        if (!vip6_addrs.is_empty() || settings.services.is_some())
            && settings.announce == Announce::Arp
        {
            for i in &all {
                let sock =
                    match crate::announce::ndp::NdpSocket::open(&i.name, i.index, &vip6_addrs) {
                        Ok(s) => Arc::new(s),
                        Err(e) if vip6_addrs.is_empty() => {
                            log::warn!("services: no IPv6 Service addresses on {}: {e}", i.name);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                forward_ns(ndp.len(), sock.clone(), ndp_tx.clone());
                ndp.push((i.clone(), sock));
            }
        }
        let route_spec =
            (settings.announce == Announce::Route).then(|| crate::announce::route::RouteSpec {
                vips: settings.vips.iter().map(|v| v.addr.into()).collect(),
                ifindex: iface.index,
                table: settings.route_table,
            });
        if let Some(spec) = &route_spec {
            super::routed::drop_stale_routes(spec);
        }
        let (health_tx, health_rx) = mpsc::channel::<HealthEvent>(1024);
        let (serve_tx, serve_rx) = watch::channel(true);
        let (serve6_tx, serve6_rx) = watch::channel(true);
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
            claims: tokio::time::interval(crate::announce::claims::PROBE),
            passive: {
                let mut i = tokio::time::interval(crate::control::passive::TICK);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            },
            vrrp: None,
            vrrp6: None,
            other_arp,
            ndp_rx,
            discovery: None,
            services: None,
        };
        let (services_tx, services_rx) = match settings.services {
            Some(_) => {
                let (tx, rx) = watch::channel(Default::default());
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let static6 = settings.backends6.clone();
        let notifier = match &settings.vrrp {
            Some(v) if v.notify_exec.is_some() || v.notify_fifo.is_some() => Some(
                crate::announce::vrrp::notify::Notifier::start(
                    v.notify_exec.as_deref(),
                    v.notify_fifo.as_deref(),
                )
                .map_err(|e| {
                    DaemonError::Runtime(format!(
                        "--notify-fifo {}: {e}",
                        v.notify_fifo
                            .as_deref()
                            .unwrap_or(std::path::Path::new(""))
                            .display()
                    ))
                })?,
            ),
            _ => None,
        };
        let fault_rx = super::track::spawn(settings.vrrp.as_ref(), &iface.name);
        let resolver = super::nexthops::spawn(shared.clone(), all.clone(), |st| {
            reconcile(st, None, None);
        })
        .map_err(|e| DaemonError::Runtime(format!("cannot start the next-hop thread: {e}")))?;
        let d = Self {
            resolver,
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
            vip6_addrs,
            ndp,
            checkers6: BTreeMap::new(),
            route_spec,
            checkers: BTreeMap::new(),
            health_tx,
            serve_tx,
            serve_rx,
            serve6_tx,
            serve6_rx,
            discovery_report: Default::default(),
            services_report: Default::default(),
            service_addrs: Vec::new(),
            service6_addrs: Vec::new(),
            services_tx,
            services_rx,
            discovered: None,
            discovered6: None,
            static6,
            garp_burst: 0,
            garp_burst_at: tokio::time::Instant::now(),
            takeover_at: None,
            _vip_on_lo: vip_on_lo,
            sync: None,
            claims: Default::default(),
            vrrp_master: false,
            vrrp_report: None,
            telling: Default::default(),
            fault_rx,
            vrrp_priority: Vec::new(),
            notifier,
        };
        Ok((d, sources))
    }
}

/// The state the loop and the status endpoint share, with two threads counting the
/// conntrack maps every 2 s (a walk of a million entries must not hold the state lock).
pub(super) fn shared_state(
    settings: &Settings,
    dataplane: Dataplane,
    reconciler: Reconciler,
) -> Arc<Mutex<Shared>> {
    let conntrack_entries = Arc::new(AtomicUsize::new(0));
    if let Some(map) = dataplane.conntrack_handle() {
        crate::dataplane::flows::count_conntrack(
            map,
            conntrack_entries.clone(),
            Duration::from_secs(2),
        );
    }
    let unconfirmed_entries = Arc::new(AtomicUsize::new(0));
    if let Some(map) = dataplane.unconfirmed_handle() {
        crate::dataplane::flows::count_live(
            map,
            Duration::from_nanos(lb_common::TCP_SYN_TIMEOUT_NS),
            unconfirmed_entries.clone(),
            Duration::from_secs(2),
        );
    }
    Arc::new(Mutex::new(Shared {
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
        backups_serving: false,
        passive: crate::control::passive::PassiveTracker::new(
            settings.health.passive_errors,
            settings.health.passive_timeout,
        ),
        passive_down: BTreeMap::new(),
        passive_ejections: BTreeMap::new(),
        // With VRRP, only the master answers ARP for the VIPs.
        // `--announce none` (per-node mode): never.
        announcing: settings.vrrp.is_none() && settings.announce == Announce::Arp,
        announcing6: settings.vrrp.is_none() && settings.announce == Announce::Arp,
        checks6: settings
            .backends6
            .iter()
            .map(|b| (b.addr, (Default::default(), true)))
            .collect(),
        route: (settings.announce == Announce::Route).then(|| {
            crate::announce::route::RouteStatus {
                announced: false,
                table: settings.route_table,
                reason: Some(
                    crate::announce::route::Withdrawn::NotAttached
                        .reason()
                        .into(),
                ),
                changes: 0,
            }
        }),
        route_failed: false,
        claims: (settings.announce == Announce::Arp).then(Default::default),
    }))
}

/// The VRRP election (`--vrrp-*`), its state changes fed to the loop.
pub(super) fn vrrp(
    d: &Daemon,
    sources: &mut Sources,
) -> Result<Option<crate::announce::vrrp::Handle>, DaemonError> {
    let Some(v) = &d.settings.vrrp else {
        return Ok(None);
    };
    if d.settings.vips.is_empty() {
        return Ok(None);
    }
    let vips: Vec<std::net::Ipv4Addr> = d.settings.vips.iter().map(|v| v.addr).collect();
    let h = crate::announce::vrrp::spawn(
        v,
        &d.iface,
        &vips,
        d.serve_rx.clone(),
        d.fault_rx.clone(),
        sources.listen_vrrp(false),
    )?;
    log::info!(
        "VRRPv{} vrid {} from {}: priority {}, advertising every {:?}, preempt {}, {}",
        v.version.number(),
        v.vrid,
        d.iface.ipv4,
        v.priority,
        v.advert_interval,
        v.preempt,
        if v.peers.is_empty() {
            "multicast".to_string()
        } else {
            format!("unicast to {:?}", v.peers)
        }
    );
    Ok(Some(h))
}

/// The IPv6 VRRP election (`--vrrp-*` with IPv6 VIPs): its own instance, same VRID, to
/// ff02::12 from the link-local address; its state changes fed to the loop.
pub(super) fn vrrp6(
    d: &Daemon,
    sources: &mut Sources,
) -> Result<Option<crate::announce::vrrp::Handle>, DaemonError> {
    let Some(v) = &d.settings.vrrp else {
        return Ok(None);
    };
    if d.settings.vips6.is_empty() {
        return Ok(None);
    }
    let vips: Vec<std::net::Ipv6Addr> = d.settings.vips6.iter().map(|v| v.addr).collect();
    let h = crate::announce::vrrp::spawn6(
        v,
        &d.iface,
        &vips,
        d.serve6_rx.clone(),
        d.fault_rx.clone(),
        sources.listen_vrrp(true),
    )?;
    log::info!(
        "VRRPv3 (IPv6) vrid {} on {}: priority {}, advertising every {:?}, preempt {}",
        v.vrid,
        d.iface.name,
        v.priority,
        v.advert_interval,
        v.preempt,
    );
    Ok(Some(h))
}

/// Conntrack sync with the VRRP group (`--sync-key-file`): its own two threads, on second
/// handles of the maps.
pub(super) fn sync(d: &Daemon) -> Result<Option<Arc<crate::sync::SyncHandle>>, DaemonError> {
    let Some(s) = &d.settings.sync else {
        return Ok(None);
    };
    let maps = d
        .shared
        .lock()
        .expect("poisoned")
        .dataplane
        .sync_maps()
        .ok_or_else(|| DaemonError::Runtime("conntrack sync: the maps are not pinned".into()))?;
    let h = crate::sync::spawn(s, &d.iface.name, d.iface.index, d.iface.ipv4, maps)?;
    log::info!(
        "conntrack sync with the VRRP group ({}), key from {}",
        h.status().transport,
        s.key_file.display()
    );
    Ok(Some(Arc::new(h)))
}

/// The status endpoint (`--metrics-addr`), rendering from the shared state on demand.
pub(super) async fn status_endpoint(
    d: &Daemon,
    vrrp: Option<&crate::announce::vrrp::Handle>,
    vrrp6: Option<&crate::announce::vrrp::Handle>,
) -> Result<JoinHandle<()>, DaemonError> {
    let source: StatusSource = {
        let shared = d.shared.clone();
        let settings = d.settings.clone();
        let xdp_mode = d.xdp_mode;
        let started = d.started;
        let vrrp_report = vrrp.map(|h| h.report());
        let vrrp6_report = vrrp6.map(|h| h.report());
        let ndp: Vec<_> = d.ndp.iter().map(|(_, s)| s.clone()).collect();
        let arp: Vec<_> = (d.settings.announce == crate::config::Announce::Arp)
            .then(|| std::iter::once(d.arp.clone()).chain(d.others.iter().map(|(_, s)| s.clone())))
            .into_iter()
            .flatten()
            .collect();
        let sync = d.sync.clone();
        let notifier = d.notifier.clone();
        let discovery = settings
            .discover_from_kubeconfig
            .clone()
            .map(|kc| (kc, d.discovery_report.clone()));
        let services = d
            .services_rx
            .clone()
            .map(|rx| (d.services_report.clone(), rx));
        let routed = settings.announce == crate::config::Announce::Route;
        Arc::new(move || {
            let announcing = {
                let s = shared.lock().expect("poisoned");
                match &s.route {
                    Some(r) => r.announced,
                    None => s.announcing,
                }
            };
            let mut st = super::report::status_of(
                &shared.lock().expect("poisoned"),
                &settings,
                xdp_mode,
                started,
            );
            st.vrrp = vrrp_report
                .as_ref()
                .and_then(|r| r.lock().ok().map(|v| v.clone()));
            st.vrrp6 = vrrp6_report
                .as_ref()
                .and_then(|r| r.lock().ok().map(|v| v.clone()));
            st.ndp = (!ndp.is_empty()).then(|| {
                let mut sum = crate::announce::ndp::NdpStatus::default();
                for n in &ndp {
                    let one = n.status();
                    sum.solicitations += one.solicitations;
                    sum.answered += one.answered;
                    sum.takeover_notices += one.takeover_notices;
                    for (k, v) in one.dropped {
                        *sum.dropped.entry(k).or_default() += v;
                    }
                }
                sum
            });
            st.arp = (!arp.is_empty()).then(|| {
                let mut sum = crate::announce::arp::ArpStatus::default();
                for a in arp.iter().map(|a| a.status()) {
                    sum.answered += a.answered;
                    sum.rate_limited += a.rate_limited;
                    sum.takeover_notices += a.takeover_notices;
                }
                sum
            });
            st.discovery = discovery
                .as_ref()
                .and_then(|(kc, r)| r.lock().ok().map(|r| r.status(kc)));
            st.sync = sync.as_ref().map(|s| s.status());
            st.notify = notifier.as_ref().map(|n| n.status());
            st.services = services.as_ref().and_then(|(r, rx)| {
                let mut s = r.lock().ok()?.status.clone();
                let set = rx.borrow();
                for a in &mut s.addresses {
                    let Some(addr) = a.address.as_deref().and_then(|x| x.parse().ok()) else {
                        continue;
                    };
                    // svc: IPv6 Service addresses are answered over NDP, routed as /128s.
                    let v4 = matches!(addr, std::net::IpAddr::V4(_));
                    let can = v4 || routed || !ndp.is_empty();
                    a.announced = set.contains(&addr) && can && announcing;
                    if set.contains(&addr) {
                        a.why = match (can, announcing) {
                            (true, true) => None,
                            (false, _) => {
                                Some("no NDP socket on this node (IPv6 unavailable?)".into())
                            }
                            (true, false) => Some(if routed {
                                "routed mode: the routes are withdrawn (see route)".into()
                            } else {
                                "this node does not hold the VIP (not the VRRP master)".into()
                            }),
                        };
                    }
                }
                Some(s)
            });
            st
        })
    };
    let addr = d.settings.metrics_addr;
    let endpoint = crate::api::server::serve(addr, source)
        .await
        .map_err(|e| DaemonError::Runtime(format!("cannot serve metrics on {addr}: {e}")))?;
    for name in &d.settings.interfaces {
        crate::api::server::record_addr(name, addr);
    }
    Ok(endpoint)
}

/// Services of type LoadBalancer (`--services`): the task that plans, writes the statuses
/// and hands the loop the addresses to announce.
pub(super) fn services(d: &mut Daemon, sources: &mut Sources) -> Option<JoinHandle<()>> {
    let s = d.settings.services.clone()?;
    let rx = d.services_rx.clone()?;
    sources.services = Some(rx);
    let tx = d.services_tx.take()?;
    log::info!(
        "services: LoadBalancer Services of class {}{} from {} pool(s), API through {}",
        crate::config::services::CLASS,
        if s.default_class { " or none" } else { "" },
        s.pools.len(),
        s.kubeconfig.display()
    );
    let shared = d.shared.clone();
    let candidates: crate::control::discovery::Candidates = Arc::new(move || {
        let s = shared.lock().expect("poisoned");
        s.reconciler
            .backends_v4()
            .filter(|(_, b)| b.healthy)
            .map(|(a, _)| std::net::SocketAddr::V4(a))
            .collect()
    });
    let owner: crate::services::watch::Owner = {
        let shared = d.shared.clone();
        let vrrp = d.settings.vrrp.is_some();
        Arc::new(move || vrrp.then(|| shared.lock().expect("poisoned").announcing))
    };
    Some(crate::services::watch::spawn(
        s,
        d.services_report.clone(),
        tx,
        candidates,
        owner,
    ))
}

/// Master discovery (`--discover-from-kubeconfig`): the API's list replaces the static one.
pub(super) fn discovery(d: &Daemon, sources: &mut Sources) -> Option<JoinHandle<()>> {
    let kc = d.settings.discover_from_kubeconfig.clone()?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    sources.discovery = Some(rx);
    let shared = d.shared.clone();
    let candidates: crate::control::discovery::Candidates = Arc::new(move || {
        let s = shared.lock().expect("poisoned");
        s.reconciler
            .backends_v4()
            .filter(|(_, b)| b.healthy)
            .map(|(a, _)| std::net::SocketAddr::V4(a))
            .chain(
                s.checks6
                    .iter()
                    .filter(|(_, (_, healthy))| *healthy)
                    .map(|(a, _)| std::net::SocketAddr::V6(*a)),
            )
            .collect()
    });
    log::info!(
        "discovering masters with {} (list, then watch)",
        kc.display()
    );
    Some(crate::control::discovery::spawn(
        kc,
        candidates,
        d.discovery_report.clone(),
        tx,
    ))
}

/// Feeds the ARP packets of a further interface's socket to the loop as `(n, packet)`.
/// Forwards neighbour solicitations from NDP socket `n` to the loop.
pub(super) fn forward_ns(
    n: usize,
    sock: Arc<crate::announce::ndp::NdpSocket>,
    tx: tokio::sync::mpsc::Sender<(usize, crate::wire::ndp::Solicitation)>,
) {
    tokio::spawn(async move {
        loop {
            match sock.recv().await {
                Ok(ns) => {
                    if tx.send((n, ns)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("NDP socket on {}: {e}", sock.interface());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

pub(super) fn forward_arp(
    n: usize,
    name: String,
    sock: Arc<crate::announce::arp::ArpSocket>,
    tx: tokio::sync::mpsc::Sender<(usize, crate::wire::arp::Arp)>,
) {
    tokio::spawn(async move {
        loop {
            match sock.recv().await {
                Ok(a) => {
                    if tx.send((n, a)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("ARP socket on {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}
