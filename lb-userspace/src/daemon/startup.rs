//! Bringing the data path up: configuration checked, pins claimed, maps loaded (or adopted),
//! the first table written and the programs attached. Nothing is left behind on failure.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant},
};

use lb_common::{CONFIG_FLAG_ICMP_ECHO, Config};

use super::DaemonError;
use crate::{
    arp::{ArpSocket, Interface, next_hops},
    config::{ConfigError, HealthKind, RunArgs, Settings},
    dataplane::{Dataplane, MapStore},
    health::{self, CheckKind, HealthSettings},
    reconcile::Reconciler,
};

/// What [`bring_up`] hands to the rest of the daemon: an attached data path and its inputs.
pub(super) struct Up {
    pub settings: Settings,
    pub iface: Interface,
    pub health: Arc<HealthSettings>,
    pub dataplane: Dataplane,
    pub reconciler: Reconciler,
    pub arp: ArpSocket,
    pub xdp_mode: &'static str,
    /// The VIPs on `lo` while this node is one of the backends; removed on drop.
    pub vip_on_lo: Option<crate::local::VipOnLo>,
    pub started: Instant,
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

/// Startup in order: configuration and interface checked (nothing touched yet), pins
/// claimed, maps loaded or adopted, next hops resolved, the first table written, the hooks
/// attached.
pub(super) async fn bring_up(args: &RunArgs) -> Result<Up, DaemonError> {
    let settings = args.resolve()?;
    check_snat_range(&settings)?;
    let iface = Interface::lookup(&settings.interface)?;
    let health = Arc::new(health_settings(&settings)?);
    if matches!(settings.health.kind, HealthKind::Https)
        && settings.health.ca_file.is_none()
        && !settings.health.insecure_skip_verify
    {
        log::info!("no --ca-file: API server certificates are not verified by the health checks");
    }
    let mut dataplane = load(&settings, &iface)?;
    let mut reconciler = Reconciler::new(&settings);
    if dataplane.adopted() {
        // Keep backend indices and next-hop MACs: tracked flows name their backend by index.
        reconciler.adopt(&dataplane.present_backends());
    }
    reconciler.set_local_addresses(crate::local::local_addresses());
    mark_local_backends(&mut reconciler, iface.mac);
    let vip_on_lo = vip_on_lo(&settings, &reconciler, &iface)?;
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
    let xdp_mode = attach(&settings, &iface, &mut dataplane)?;
    Ok(Up {
        settings,
        iface,
        health,
        dataplane,
        reconciler,
        arp,
        xdp_mode,
        vip_on_lo,
        started: Instant::now(),
    })
}

/// Claims the pins (another program in the way is refused here, before anything is
/// loaded), loads or adopts the maps and writes the data path's settings.
fn load(settings: &Settings, iface: &Interface) -> Result<Dataplane, DaemonError> {
    let pins = crate::pins::claim(&settings.pin_root, iface)?;
    let mut dataplane = Dataplane::load_pinned(
        super::OBJECT,
        settings.conntrack_size,
        Some((&pins, &iface.name)),
    )?;
    if dataplane.adopted() {
        log::info!(
            "adopted the pinned state in {} ({} tracked flows)",
            pins.display(),
            dataplane.conntrack_entries()
        );
    }
    dataplane.set_config(&Config {
        snat_port_min: settings.snat_ports.0,
        snat_port_max: settings.snat_ports.1,
        flags: if settings.icmp_echo {
            CONFIG_FLAG_ICMP_ECHO
        } else {
            0
        } | if settings.sync.is_some() {
            lb_common::CONFIG_FLAG_SYNC
        } else {
            0
        },
        if_mac: iface.mac,
        _pad: [0; 2],
    })?;
    Ok(dataplane)
}

/// A backend that is this node is reached through the local stack, with the VIP on lo.
fn vip_on_lo(
    settings: &Settings,
    r: &Reconciler,
    iface: &Interface,
) -> Result<Option<crate::local::VipOnLo>, DaemonError> {
    if !r.backends().keys().any(|a| r.is_local(a)) {
        return Ok(None);
    }
    let vips: Vec<Ipv4Addr> = settings.vips.iter().map(|v| v.addr).collect();
    let lo = crate::local::VipOnLo::install(&vips, &iface.name)?;
    log::info!("this node is a backend: the VIPs are on lo (arp_ignore=1, arp_announce=2)");
    Ok(Some(lo))
}

/// Attaches the `connect4` hook (if wanted) and the XDP program. On failure nothing stays
/// attached or pinned, unless it was adopted: then the previous xvip's program keeps serving.
fn attach(
    settings: &Settings,
    iface: &Interface,
    dataplane: &mut Dataplane,
) -> Result<&'static str, DaemonError> {
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
    Ok(xdp_mode)
}

/// Every backend's next hop, from one read of the route table.
pub(super) fn backend_next_hops(r: &Reconciler, iface: &str) -> BTreeMap<SocketAddrV4, Ipv4Addr> {
    let backends: Vec<SocketAddrV4> = r.backends().keys().copied().collect();
    let hops = next_hops(iface, backends.iter().map(|a| *a.ip()));
    backends.into_iter().zip(hops).collect()
}

/// Gives backends on this node's own addresses the interface's MAC: they need no ARP.
pub(super) fn mark_local_backends(r: &mut Reconciler, mac: [u8; 6]) {
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
