//! The tasks beside the loop, each started by one function: the shared state with its
//! flow counters, the VRRP election, the status endpoint and master discovery. (Health
//! checkers are started by the loop's owner, `events::Daemon::start_checkers`.)

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::Duration,
};

use tokio::task::JoinHandle;

use super::{DaemonError, Shared, events::Daemon, events::Sources};
use crate::{
    api::status::StatusSource,
    config::{Announce, Settings},
    control::reconcile::Reconciler,
    dataplane::Dataplane,
};

/// The state the loop and the status endpoint share, with two threads counting the
/// conntrack maps every 2 s (a walk of a million entries must not hold the state lock).
pub(super) fn shared_state(
    settings: &Settings,
    dataplane: Dataplane,
    reconciler: Reconciler,
) -> Arc<Mutex<Shared>> {
    let conntrack_entries = Arc::new(AtomicUsize::new(0));
    if let Some(map) = dataplane.conntrack_handle() {
        crate::dataplane::count_conntrack(map, conntrack_entries.clone(), Duration::from_secs(2));
    }
    let unconfirmed_entries = Arc::new(AtomicUsize::new(0));
    if let Some(map) = dataplane.unconfirmed_handle() {
        crate::dataplane::count_live(
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
        // With VRRP, only the master answers ARP for the VIPs.
        // `--announce none` (per-node mode): never.
        announcing: settings.vrrp.is_none() && settings.announce == Announce::Arp,
        announcing6: settings.vrrp.is_none() && settings.announce == Announce::Arp,
        checks6: settings
            .backends6
            .iter()
            .map(|b| (b.addr, (Default::default(), true)))
            .collect(),
        route: (settings.announce == Announce::Route).then(|| crate::route::RouteStatus {
            announced: false,
            table: settings.route_table,
            reason: Some(crate::route::Withdrawn::NotAttached.reason().into()),
            changes: 0,
        }),
        route_failed: false,
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
        sources.listen_vrrp(),
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
        sources.listen_vrrp6(),
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
        let discovery = settings
            .discover_from_kubeconfig
            .clone()
            .map(|kc| (kc, d.discovery_report.clone()));
        Arc::new(move || {
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
                let mut sum = crate::api::status::NdpStatus::default();
                for n in &ndp {
                    let one = n.status();
                    sum.solicitations += one.solicitations;
                    sum.answered += one.answered;
                    for (k, v) in one.dropped {
                        *sum.dropped.entry(k).or_default() += v;
                    }
                }
                sum
            });
            st.arp = (!arp.is_empty()).then(|| {
                let mut sum = crate::api::status::ArpStatus::default();
                for a in arp.iter().map(|a| a.status()) {
                    sum.answered += a.answered;
                    sum.rate_limited += a.rate_limited;
                }
                sum
            });
            st.discovery = discovery
                .as_ref()
                .and_then(|(kc, r)| r.lock().ok().map(|r| r.status(kc)));
            st.sync = sync.as_ref().map(|s| s.status());
            st
        })
    };
    let addr = d.settings.metrics_addr;
    let endpoint = crate::api::status::serve(addr, source)
        .await
        .map_err(|e| DaemonError::Runtime(format!("cannot serve metrics on {addr}: {e}")))?;
    for name in &d.settings.interfaces {
        crate::api::status::record_addr(name, addr);
    }
    Ok(endpoint)
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
    tx: tokio::sync::mpsc::Sender<(usize, crate::announce::ndp::Solicitation)>,
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
    tx: tokio::sync::mpsc::Sender<(usize, crate::announce::arp::Arp)>,
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
