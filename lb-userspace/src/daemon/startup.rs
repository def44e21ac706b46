//! Bringing the data path up: configuration checked, pins claimed, maps loaded (or adopted),
//! the first table written and the programs attached. Nothing is left behind on failure.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use lb_common::{CONFIG_FLAG_ICMP_ECHO, CONFIG_FLAG_IFACES, Config, IfaceMac, Ifaces};

use super::DaemonError;
use crate::{
    announce::arp::{ArpError, ArpSocket},
    config::{ConfigError, HealthKind, Settings, args::RunArgs},
    control::health::{CheckKind, HealthSettings},
    control::nexthop,
    control::reconcile::Reconciler,
    dataplane::{Dataplane, ProgramStart, store::MapStore},
    net::iface::Interface,
};

/// What [`bring_up`] hands to the rest of the daemon: an attached data path and its inputs.
pub(super) struct Up {
    pub settings: Settings,
    /// The first interface (VRRP, routed mode, the pins' key).
    pub iface: Interface,
    /// The further interfaces (`--interface` repeated), each with its ARP socket.
    pub others: Vec<(Interface, ArpSocket)>,
    pub health: Arc<HealthSettings>,
    pub dataplane: Dataplane,
    pub reconciler: Reconciler,
    pub arp: ArpSocket,
    pub xdp_mode: &'static str,
    /// The VIPs on `lo` while this node is one of the backends; removed on drop.
    pub vip_on_lo: Option<crate::dataplane::local::VipOnLo>,
    pub started: Instant,
    /// The first round's next hops (or why not), as `Shared::next_hops`.
    pub next_hops: BTreeMap<std::net::SocketAddr, String>,
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
            tls: crate::net::tls::tls_config(
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
    check_kubeconfig(&s)?;
    Ok(s)
}

/// A kubeconfig that would send credentials to an unverified server is bad configuration
/// (exit 2), not something discovery retries forever.
fn check_kubeconfig(s: &Settings) -> Result<(), ConfigError> {
    if let Some(sv) = &s.services {
        check_one_kubeconfig("--services-kubeconfig", &sv.kubeconfig)?;
    }
    let Some(path) = &s.discover_from_kubeconfig else {
        return Ok(());
    };
    check_one_kubeconfig("--discover-from-kubeconfig", path)
}

/// [`check_kubeconfig`] of one file, named by its flag.
fn check_one_kubeconfig(field: &'static str, path: &std::path::Path) -> Result<(), ConfigError> {
    crate::control::discovery::kubeconfig::check_kubeconfig(path).map_err(|e| {
        ConfigError::Invalid {
            field,
            value: path.display().to_string(),
            reason: match e {
                crate::control::discovery::DiscoveryError::NoCa { cluster, .. } => {
                    crate::control::discovery::no_ca(&cluster)
                }
                other => other.to_string(),
            },
        }
    })
}

/// The SNAT ports must stay clear of this namespace's ephemeral ports when the SNAT address
/// is the node's own (see `config::parse::check_snat_ephemeral`).
fn check_snat_range(s: &Settings) -> Result<(), ConfigError> {
    let ephemeral = std::fs::read_to_string(crate::config::parse::LOCAL_PORT_RANGE)
        .ok()
        .and_then(|t| crate::config::parse::parse_local_port_range(&t));
    crate::config::parse::check_snat_ephemeral(
        s,
        &crate::dataplane::local::local_addresses(),
        ephemeral,
    )
}

/// Startup in order: configuration and interface checked (nothing touched yet), the
/// interfaces' instance locks taken (`pins::lock::lock_interfaces`), pins claimed, maps loaded or adopted, next hops resolved, the first table written, the hooks
/// attached.
pub(super) async fn bring_up(args: &RunArgs) -> Result<Up, DaemonError> {
    let begun = Instant::now();
    let settings = args.resolve()?;
    check_snat_range(&settings)?;
    check_kubeconfig(&settings)?;
    // One xvip per interface, before anything is adopted, written or attached: a second
    // run waits for a stopping one, else exits 2 naming it (its pins stay untouched).
    let names: Vec<&str> = settings.interfaces.iter().map(String::as_str).collect();
    crate::dataplane::pins::lock::lock_interfaces(
        std::path::Path::new(crate::dataplane::pins::lock::LOCK_ROOT),
        &names,
        crate::dataplane::pins::lock::LOCK_WAIT,
    )?
    .hold_until_exit();
    let iface = Interface::lookup(&settings.interface).map_err(ArpError::from)?;
    let mut other_ifaces = Vec::new();
    for name in &settings.interfaces[1..] {
        other_ifaces.push(Interface::lookup(name).map_err(ArpError::from)?);
    }
    let health = Arc::new(health_settings(&settings)?);
    if matches!(settings.health.kind, HealthKind::Https)
        && settings.health.ca_file.is_none()
        && !settings.health.insecure_skip_verify
    {
        log::info!("no --ca-file: API server certificates are not verified by the health checks");
    }
    let maps_begun = Instant::now();
    let mut dataplane = load(&settings, &iface, &other_ifaces)?;
    let maps_time = maps_begun.elapsed();
    let mut reconciler = Reconciler::new(&settings);
    if dataplane.adopted() {
        // Keep backend indices and next-hop MACs: tracked flows name their backend by index.
        reconciler.adopt(&dataplane.present_backends());
    }
    reconciler.set_local_addresses(
        crate::dataplane::local::local_addresses()
            .into_iter()
            .map(std::net::IpAddr::V4)
            .chain(
                crate::announce::ndp::all_addresses()
                    .into_iter()
                    .map(std::net::IpAddr::V6),
            ),
    );
    mark_local_backends(&mut reconciler, iface.mac);
    let vip_on_lo = vip_on_lo(&settings, &reconciler, &iface)?;
    let arp = ArpSocket::open(&iface)?;
    let mut others = Vec::new();
    for i in other_ifaces {
        let sock = ArpSocket::open(&i)?;
        others.push((i, sock));
    }
    let all: Vec<Interface> = std::iter::once(iface.clone())
        .chain(others.iter().map(|(i, _)| i.clone()))
        .collect();
    // The verifier's walk of the program is most of the start-up (docs/benchmarks.md,
    // "Start-up"): it runs on a blocking thread while the backends' next hops resolve
    // (before attaching, so the first table is not empty). Nothing is attached before both
    // are done; a refused program drops the maps as before.
    let attach_to = settings.interfaces.clone();
    let verifying = tokio::task::spawn_blocking(move || {
        let since = Instant::now();
        // A restart of the same binary adopts the program its predecessor left attached.
        let verified = dataplane.verify_or_adopt(&attach_to);
        (dataplane, verified, since.elapsed())
    });
    let hops_begun = Instant::now();
    let mut hops = BTreeMap::new();
    resolve_before_attach(&all, &mut reconciler, &mut hops, Duration::from_millis(500)).await;
    let hops_time = hops_begun.elapsed();
    let (mut dataplane, verified, verify_time) = verifying
        .await
        .map_err(|e| DaemonError::Runtime(format!("the program's load did not finish: {e}")))?;
    let insns = verified?;
    let known = reconciler
        .backends()
        .values()
        .filter(|b| b.mac.is_some())
        .count();
    log::info!(
        "{known} of {} backends' next hops resolved before attaching",
        reconciler.backends().len()
    );
    let table_begun = Instant::now();
    reconciler.apply(&mut dataplane, &[])?;
    let table_time = table_begun.elapsed();
    let attach_begun = Instant::now();
    let xdp_mode = attach(&settings, &all, &mut dataplane)?;
    dataplane.mark_program();
    let program = match insns {
        ProgramStart::Adopted(id) => format!(
            "program adopted (id {id}, no verifier) {} ms",
            verify_time.as_millis()
        ),
        ProgramStart::Verified(n) => format!(
            "the verifier {} ms ({})",
            verify_time.as_millis(),
            n.map_or("instructions not reported".into(), |n| format!(
                "{n} instructions processed"
            ))
        ),
    };
    log::info!(
        "started in {} ms: maps {} ms, {program} beside the next hops {} ms, \
         first table {} ms, attach {} ms",
        begun.elapsed().as_millis(),
        maps_time.as_millis(),
        hops_time.as_millis(),
        table_time.as_millis(),
        attach_begun.elapsed().as_millis(),
    );
    Ok(Up {
        settings,
        iface,
        others,
        next_hops: hops,
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
fn load(
    settings: &Settings,
    iface: &Interface,
    others: &[Interface],
) -> Result<Dataplane, DaemonError> {
    let (pins, placement) =
        crate::dataplane::pins::claim(&settings.pin_root, iface, settings.attach)?;
    for o in others {
        crate::dataplane::pins::claim_extra(&pins, o)?;
    }
    let keep: Vec<&str> = others.iter().map(|o| o.name.as_str()).collect();
    for gone in crate::dataplane::pins::drop_unlisted_links(&pins, &keep) {
        log::info!("{gone} is no longer an --interface: its pinned link was removed");
    }
    let mut dataplane = Dataplane::load_maps(
        super::OBJECT,
        settings.conntrack_size,
        !settings.vips6.is_empty(),
        Some((&pins, &iface.name)),
        placement,
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
        } | if others.is_empty() {
            0
        } else {
            CONFIG_FLAG_IFACES
        },
        if_mac: iface.mac,
        _pad: [0; 2],
    })?;
    let mut table = Ifaces::default();
    for (e, i) in table
        .entries
        .iter_mut()
        .zip(std::iter::once(iface).chain(others))
    {
        *e = IfaceMac {
            ifindex: i.index,
            mac: i.mac,
            _pad: [0; 2],
        };
    }
    dataplane.set_ifaces(&table)?;
    Ok(dataplane)
}

/// A backend that is this node is reached through the local stack, with the VIP on lo.
fn vip_on_lo(
    settings: &Settings,
    r: &Reconciler,
    iface: &Interface,
) -> Result<Option<crate::dataplane::local::VipOnLo>, DaemonError> {
    let local6 = crate::announce::ndp::all_addresses();
    let v6_local = settings
        .backends6
        .iter()
        .any(|b| local6.contains(b.addr.ip()));
    let v4_local = r.backends().keys().any(|a| r.is_local(a));
    if !v4_local && !v6_local {
        return Ok(None);
    }
    let vips: Vec<Ipv4Addr> = if v4_local {
        settings.vips.iter().map(|v| v.addr).collect()
    } else {
        Vec::new()
    };
    let mut lo = crate::dataplane::local::VipOnLo::install(&vips, &iface.name)?;
    if v6_local {
        let vips6: Vec<std::net::Ipv6Addr> = settings.vips6.iter().map(|v| v.addr).collect();
        lo.add_v6(&vips6)?;
    }
    log::info!(
        "this node is a backend: its VIPs are on lo ({}{})",
        if v4_local {
            "IPv4 with arp_ignore=1, arp_announce=2"
        } else {
            ""
        },
        if v6_local { " IPv6" } else { "" }
    );
    Ok(Some(lo))
}

/// Attaches the `connect4` hook (if wanted) and the XDP program. On failure nothing stays
/// attached or pinned, unless it was adopted: then the previous xvip's program keeps serving.
fn attach(
    settings: &Settings,
    ifaces: &[Interface],
    dataplane: &mut Dataplane,
) -> Result<&'static str, DaemonError> {
    let iface = &ifaces[0];
    let adopted = dataplane.adopted();
    let attached = (|| -> Result<&'static str, DaemonError> {
        if settings.local_connect {
            let cgroup = crate::dataplane::local::cgroup_root()?;
            dataplane.attach_connect4(&cgroup, crate::dataplane::local::netns_cookie()?)?;
        }
        let placement = dataplane.placement();
        let first = dataplane.attach(&iface.name, settings.xdp_mode, placement)?;
        // One program and one set of maps on every interface: a failure on any detaches all.
        for other in &ifaces[1..] {
            let mode = dataplane.attach(&other.name, settings.xdp_mode, placement)?;
            log::info!("attached to {} ({mode} XDP) too", other.name);
        }
        Ok(first)
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
        "attached to {} ({}), VIPs {}, {} backends, {:?} mode",
        iface.name,
        if xdp_mode.starts_with("tc") {
            format!("{xdp_mode} ingress")
        } else {
            format!("{xdp_mode} XDP")
        },
        settings
            .vips
            .iter()
            .map(|v| format!("{}:{}", v.addr, v.port))
            .chain(
                settings
                    .vips6
                    .iter()
                    .map(|v| std::net::SocketAddrV6::new(v.addr, v.port, 0, 0).to_string())
            )
            .collect::<Vec<_>>()
            .join(" "),
        settings.backends.len() + settings.backends6.len(),
        settings.mode
    );
    Ok(xdp_mode)
}

/// One round of next hops from the kernel, all at once (start-up, before the event loop
/// runs; later rounds run on their own thread: `nexthops`). Returns whether the table must
/// be rewritten.
pub(super) fn refresh_next_hops(
    r: &mut Reconciler,
    ifaces: &[Interface],
    hops: &mut BTreeMap<std::net::SocketAddr, String>,
) -> bool {
    let addrs = super::nexthops::wanted(r);
    match nexthop::next_hops(addrs.iter().map(|a| a.ip())) {
        Ok(found) => super::nexthops::apply(r, ifaces, hops, &addrs, found),
        Err(e) => {
            log::warn!("next hops: {e}");
            false
        }
    }
}

/// Gives backends on this node's own addresses the interface's MAC: they need no ARP.
pub(super) fn mark_local_backends(r: &mut Reconciler, mac: [u8; 6]) {
    let locals: Vec<std::net::SocketAddr> = r
        .backends()
        .keys()
        .filter(|a| r.is_local(*a))
        .copied()
        .collect();
    for a in locals {
        r.set_mac(a, mac);
    }
}

/// Next-hop rounds every 20 ms until every backend has a MAC or `within` passes (the kernel
/// resolves on the first round's request), so the first table is not empty.
async fn resolve_before_attach(
    ifaces: &[Interface],
    r: &mut Reconciler,
    hops: &mut BTreeMap<std::net::SocketAddr, String>,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        refresh_next_hops(r, ifaces, hops);
        let pending = r.backends().values().any(|b| b.mac.is_none());
        if !pending || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGHUP's one line about what it did not apply (nothing when only backends or the VRRP
/// priority changed).
pub(super) fn log_unapplied(old: &Settings, new: &Settings) {
    let left = crate::config::reload::needs_restart(old, new);
    if !left.is_empty() {
        log::warn!(
            "SIGHUP: changes to {} need a restart; applied: backends, VRRP priority",
            left.join(", ")
        );
    }
}
