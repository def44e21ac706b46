//! The status document (`/status`, `xvip status`): what the daemon reports, as one serde
//! value. Each producer owns the part it reports (`announce::vrrp::VrrpStatus`,
//! `announce::ndp::NdpStatus`, `announce::arp::ArpStatus`,
//! `control::discovery::DiscoveryStatus`, `sync::SyncStatus`, `route::RouteStatus`); this
//! module puts them together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    announce::{arp::ArpStatus, ndp::NdpStatus, vrrp::VrrpStatus},
    control::discovery::DiscoveryStatus,
};

/// One backend in the status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub addr: String,
    pub index: u32,
    pub weight: u32,
    /// A backup: in the table only while no primary of its family is healthy.
    #[serde(default)]
    pub backup: bool,
    pub healthy: bool,
    /// Out of the table for failed handshakes of live traffic (passive health), until
    /// its check's rise.
    #[serde(default)]
    pub passive_down: bool,
    /// New flows' SYNs the backend answered with a RST.
    #[serde(default)]
    pub handshakes_refused: u64,
    /// New flows' SYNs the backend left unanswered past `--passive-timeout`.
    #[serde(default)]
    pub handshakes_unanswered: u64,
    /// Times failed handshakes took it out.
    #[serde(default)]
    pub passive_ejections: u64,
    /// Next-hop MAC, once resolved.
    pub mac: Option<String>,
    /// The next hop from the kernel's tables ("192.0.2.1 on eth0 (gateway)"), or why the
    /// backend has none (no route, neighbour unresolved): it stays out of the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    /// Slots owned in the (shared) Maglev table.
    pub slots: usize,
    /// Latency of the last successful check, in milliseconds.
    pub check_ms: Option<f64>,
    /// Reason of the last failed check.
    pub last_error: Option<String>,
    pub checks_ok: u64,
    pub checks_failed: u64,
    pub transitions: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// Traffic of one VIP through the data path.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VipTraffic {
    pub vip: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// The whole status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub interface: String,
    pub xdp_mode: String,
    pub mode: String,
    pub vips: Vec<String>,
    /// Packets, bytes and new flows per VIP (in the order of `vips`).
    #[serde(default)]
    pub vip_traffic: Vec<VipTraffic>,
    pub table_size: u32,
    pub backends: Vec<BackendStatus>,
    /// Packets per verdict reason.
    pub reasons: BTreeMap<String, u64>,
    /// Confirmed flows (both ends have spoken).
    pub conntrack_entries: usize,
    /// Flows not confirmed yet: handshakes in progress, spoofed SYNs, stray packets.
    #[serde(default)]
    pub unconfirmed_entries: usize,
    pub table_swaps: u64,
    /// From the health transition to the table swap, last time, in milliseconds.
    pub last_reconcile_ms: Option<f64>,
    /// From the first failed check of a streak to the table swap, last time, in milliseconds.
    pub last_detection_ms: Option<f64>,
    /// No backend is healthy: the table holds every reachable backend.
    pub fail_open: bool,
    /// No primary is healthy: the backups hold the table.
    #[serde(default)]
    pub backups_serving: bool,
    /// Whether this node answers ARP for the (IPv4) VIPs.
    pub announcing: bool,
    /// Whether this node answers NDP for the IPv6 VIPs (`None` without IPv6 VIPs).
    #[serde(default)]
    pub announcing6: Option<bool>,
    pub uptime_s: f64,
    /// VRRP failover state, when enabled (the IPv4 instance).
    #[serde(default)]
    pub vrrp: Option<VrrpStatus>,
    /// The IPv6 VRRP instance (same VRID, ff02::12), when enabled with IPv6 VIPs.
    #[serde(default)]
    pub vrrp6: Option<VrrpStatus>,
    /// NDP for the IPv6 VIPs, when announced.
    #[serde(default)]
    pub ndp: Option<NdpStatus>,
    /// ARP answers for the IPv4 VIPs (absent in routed mode).
    #[serde(default)]
    pub arp: Option<ArpStatus>,
    /// Other claimants of the VIPs seen on the wire (absent in routed mode and with
    /// `--announce none`).
    #[serde(default)]
    pub claims: Option<crate::announce::claims::ClaimsStatus>,
    /// The same for the IPv6 VIPs, from neighbour advertisements (absent without them).
    #[serde(default)]
    pub claims6: Option<crate::announce::claims::ClaimsStatus>,
    /// Master discovery, when enabled.
    #[serde(default)]
    pub discovery: Option<DiscoveryStatus>,
    /// The VIP routes of routed mode (`--announce route`), when enabled.
    #[serde(default)]
    pub route: Option<crate::announce::route::RouteStatus>,
    /// Conntrack sync (`--sync-key-file`), when enabled.
    #[serde(default)]
    pub sync: Option<crate::sync::SyncStatus>,
    /// The VRRP notify hooks (`--notify-exec`, `--notify-fifo`), when given.
    #[serde(default)]
    pub notify: Option<crate::announce::vrrp::notify::NotifyStatus>,
    /// Services of type LoadBalancer (`--services`), when enabled.
    #[serde(default)]
    pub services: Option<crate::services::watch::ServicesStatus>,
}

impl Status {
    /// Whether the VIP is under a flood: more unconfirmed flows than a control plane makes
    /// (each real one lives a round trip), as spoofed SYNs or bare ACKs leave.
    pub fn under_flood(&self) -> bool {
        self.unconfirmed_entries >= lb_common::UNCONFIRMED_FLOOD_THRESHOLD as usize
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small document: one healthy backend, one reason counted.
    pub(crate) fn sample() -> Status {
        Status {
            interface: "eth0".into(),
            backends: vec![BackendStatus {
                addr: "192.0.2.11:6443".into(),
                healthy: true,
                slots: 7,
                weight: 1,
                ..Default::default()
            }],
            reasons: [("tx_forward".to_string(), 5u64)].into(),
            ..Default::default()
        }
    }
}
