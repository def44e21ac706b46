//! The status document (`/status`, `xvip status`, and the metrics rendered from it), built
//! from the shared state on demand.

use std::time::Instant;

use lb_common::Reason;

use super::Shared;
use crate::{
    api::document::{BackendStatus, Status},
    config::Settings,
    control::maglev::slot_shares,
    net::iface::format_mac,
};

pub(super) fn status_of(
    s: &Shared,
    settings: &Settings,
    xdp_mode: &str,
    started: Instant,
) -> Status {
    // No IPv4 VIP (IPv6 only): no IPv4 table to share out.
    let shares = if settings.vips.is_empty() {
        Default::default()
    } else {
        slot_shares(s.reconciler.table(0))
    };
    let indices: Vec<u32> = s.reconciler.backends().values().map(|b| b.index).collect();
    let snap = s.dataplane.snapshot(&indices).unwrap_or_default();
    let backends: Vec<BackendStatus> = s
        .reconciler
        .backends()
        .iter()
        .map(|(addr, b)| {
            let c = match addr {
                std::net::SocketAddr::V4(a) => s.checks.get(a).cloned(),
                std::net::SocketAddr::V6(a) => s.checks6.get(a).map(|(c, _)| c.clone()),
            }
            .unwrap_or_default();
            let t = snap.backends.get(&b.index).copied().unwrap_or_default();
            BackendStatus {
                addr: addr.to_string(),
                index: b.index,
                weight: b.weight,
                backup: s.reconciler.is_backup(addr),
                passive_down: s.passive_down.contains_key(addr),
                handshakes_refused: s.passive.stats(addr).refused,
                handshakes_unanswered: s.passive.stats(addr).unanswered,
                passive_ejections: s.passive_ejections.get(addr).copied().unwrap_or(0),
                healthy: b.healthy,
                mac: b.mac.map(|m| format_mac(&m)),
                next_hop: s.next_hops.get(addr).cloned(),
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
    let vip6 = |v: &crate::config::VipSpec6| std::net::SocketAddrV6::new(v.addr, v.port, 0, 0);
    Status {
        interface: settings.interfaces.join(","),
        xdp_mode: xdp_mode.into(),
        mode: format!("{:?}", settings.mode).to_lowercase(),
        vips: settings
            .vips
            .iter()
            .map(|v| format!("{}:{}", v.addr, v.port))
            .chain(settings.vips6.iter().map(|v| vip6(v).to_string()))
            .collect(),
        vip_traffic: settings
            .vips
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = snap.vips.get(i).copied().unwrap_or_default();
                crate::api::document::VipTraffic {
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
        backups_serving: s.backups_serving,
        announcing: s.announcing,
        announcing6: (!settings.vips6.is_empty()).then_some(s.announcing6),
        uptime_s: started.elapsed().as_secs_f64(),
        vrrp: None,
        vrrp6: None,
        ndp: None,
        arp: None,
        claims: s.claims.clone(),
        claims6: s.claims6.clone(),
        discovery: None,
        route: s.route.clone(),
        sync: None,
        notify: None,
        services: None,
    }
}
