//! What the daemon reports: the status document (`/status`, `xvip status`), the Prometheus
//! text exposition (`/metrics`) and the small HTTP endpoint serving both plus `/healthz`.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

/// Label pairs of one sample.
type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// One backend in the status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub addr: String,
    pub index: u32,
    pub weight: u32,
    pub healthy: bool,
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

/// VRRP failover (absent without `--vrrp-vrid`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VrrpStatus {
    pub vrid: u8,
    /// initialize, backup or master.
    pub state: String,
    /// The current master's address, when known.
    pub master: Option<String>,
    /// Our own (primary) address.
    pub address: String,
    /// Priority advertised now (configured, minus the health penalty while no backend can
    /// be served).
    pub priority: u8,
    pub configured_priority: u8,
    pub preempt: bool,
    pub advert_interval_ms: f64,
    /// Learnt from the master's advertisements.
    pub master_adver_interval_ms: f64,
    pub transitions: u64,
    pub adverts_sent: u64,
    /// Advertisements that passed every check.
    pub adverts_received: u64,
    pub send_errors: u64,
    /// Advertisements dropped, by reason.
    pub drops: BTreeMap<String, u64>,
    /// VRRP version spoken, 2 or 3.
    #[serde(default)]
    pub version: u8,
    /// Authentication: "none" or "pass" (never the password).
    #[serde(default)]
    pub auth: String,
    /// The mismatch guard holds: adverts for our VRID arrive that we cannot join (other
    /// version, password or v2 interval), so this node does not become master.
    #[serde(default)]
    pub guard_holding: bool,
    /// Routers seen advertising our VRID that way (at most 16, the latest heard).
    #[serde(default)]
    pub conflicts: Vec<VrrpConflict>,
    /// Such routers forgotten: evicted from the full list, or silent for 5 minutes.
    #[serde(default)]
    pub conflicts_evicted: u64,
    /// Guard log lines not written (over the per-minute budget).
    #[serde(default)]
    pub guard_logs_suppressed: u64,
}

/// A router advertising our VRID in a way we cannot join (the mismatch guard).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VrrpConflict {
    pub peer: String,
    /// The drop reason: version_mismatch, auth_type, auth_pass or interval_mismatch.
    pub reason: String,
    /// The VRRP version it speaks.
    pub version: u8,
    pub adverts: u64,
    /// Seconds since its last such advertisement.
    pub last_seen_s: f64,
    /// Whether it still holds the guard.
    pub active: bool,
    /// Whether it kept its claimed rate for several adverts (a master steps down for it).
    #[serde(default)]
    pub owner: bool,
}

/// Master discovery (absent without `--discover-from-kubeconfig`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DiscoveryStatus {
    pub kubeconfig: String,
    /// Ready API servers of the last answer.
    pub masters: Vec<String>,
    /// Seconds since the last answer, when there was one.
    pub last_success_age_s: Option<f64>,
    /// Why the last poll failed, while polls fail.
    pub last_error: Option<String>,
    pub polls_ok: u64,
    pub polls_failed: u64,
}

/// The ARP sockets' answers (all attached interfaces together).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ArpStatus {
    /// Requests for our addresses answered.
    pub answered: u64,
    /// Requests for our addresses not answered: over the requester's or the segment's
    /// budget.
    pub rate_limited: u64,
}

/// The NDP socket's counters (IPv6 VIPs announced with `--announce arp`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NdpStatus {
    /// Neighbour solicitations that passed the RFC 4861 checks (for any target).
    pub solicitations: u64,
    /// Those answered (a target of ours, while announcing).
    pub answered: u64,
    /// Frames dropped by the checks, by reason.
    pub dropped: BTreeMap<String, u64>,
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
    /// Master discovery, when enabled.
    #[serde(default)]
    pub discovery: Option<DiscoveryStatus>,
    /// The VIP routes of routed mode (`--announce route`), when enabled.
    #[serde(default)]
    pub route: Option<crate::route::RouteStatus>,
    /// Conntrack sync (`--sync-key-file`), when enabled.
    #[serde(default)]
    pub sync: Option<crate::sync::SyncStatus>,
}

impl Status {
    /// Whether the VIP is under a flood: more unconfirmed flows than a control plane makes
    /// (each real one lives a round trip), as spoofed SYNs or bare ACKs leave.
    pub fn under_flood(&self) -> bool {
        self.unconfirmed_entries >= lb_common::UNCONFIRMED_FLOOD_THRESHOLD as usize
    }

    /// OpenMetrics text exposition through `prometheus-client` (a counter's `TYPE` and
    /// `HELP` lines name it without `_total`; its samples keep the suffix).
    pub fn to_prometheus(&self) -> String {
        let mut reg = Registry::with_prefix("xvip");
        for (name, help, f) in [
            (
                "backend_healthy",
                "1 when the backend passes its health check.",
                (|b: &BackendStatus| i64::from(b.healthy)) as fn(&BackendStatus) -> i64,
            ),
            (
                "backend_slots",
                "Maglev table slots owned by the backend.",
                |b| b.slots as i64,
            ),
            ("backend_weight", "Configured weight (0 = draining).", |b| {
                i64::from(b.weight)
            }),
        ] {
            let fam = Family::<Labels, Gauge>::default();
            for b in &self.backends {
                fam.get_or_create(&labels(&[("backend", &b.addr)]))
                    .set(f(b));
            }
            reg.register(name, help, fam);
        }
        let latency = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for b in &self.backends {
            if let Some(ms) = b.check_ms {
                latency
                    .get_or_create(&labels(&[("backend", &b.addr)]))
                    .set(ms / 1000.0);
            }
        }
        reg.register(
            "backend_check_latency_seconds",
            "Latency of the last successful health check.",
            latency,
        );
        let checks = Family::<Labels, Counter>::default();
        for b in &self.backends {
            for (result, n) in [("ok", b.checks_ok), ("failed", b.checks_failed)] {
                checks
                    .get_or_create(&labels(&[("backend", &b.addr), ("result", result)]))
                    .inc_by(n);
            }
        }
        reg.register("backend_checks", "Health checks by result.", checks);
        for (name, help, f) in [
            (
                "backend_transitions",
                "Health state changes.",
                (|b: &BackendStatus| b.transitions) as fn(&BackendStatus) -> u64,
            ),
            (
                "backend_packets",
                "Packets forwarded to or from the backend.",
                |b| b.packets,
            ),
            (
                "backend_bytes",
                "Bytes forwarded to or from the backend.",
                |b| b.bytes,
            ),
            ("backend_new_flows", "Flows assigned to the backend.", |b| {
                b.new_flows
            }),
        ] {
            let fam = Family::<Labels, Counter>::default();
            for b in &self.backends {
                fam.get_or_create(&labels(&[("backend", &b.addr)]))
                    .inc_by(f(b));
            }
            reg.register(name, help, fam);
        }
        let reasons = Family::<Labels, Counter>::default();
        for (k, v) in &self.reasons {
            reasons.get_or_create(&labels(&[("reason", k)])).inc_by(*v);
        }
        reg.register(
            "packets",
            "Packets seen by the XDP program, by verdict reason.",
            reasons,
        );
        for (name, help, f) in [
            (
                "vip_packets",
                "Packets forwarded for the VIP (both directions).",
                (|v: &VipTraffic| v.packets) as fn(&VipTraffic) -> u64,
            ),
            (
                "vip_bytes",
                "Bytes forwarded for the VIP (both directions).",
                |v| v.bytes,
            ),
            ("vip_new_flows", "Flows created for the VIP.", |v| {
                v.new_flows
            }),
        ] {
            let fam = Family::<Labels, Counter>::default();
            for v in &self.vip_traffic {
                fam.get_or_create(&labels(&[("vip", &v.vip)])).inc_by(f(v));
            }
            reg.register(name, help, fam);
        }
        let gauge = |reg: &mut Registry, name: &str, help: &str, x: f64| {
            let g = Gauge::<f64, AtomicU64>::default();
            g.set(x);
            reg.register(name, help, g);
        };
        let counter = |reg: &mut Registry, name: &str, help: &str, n: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            reg.register(name, help, c);
        };
        let int = |reg: &mut Registry, name: &str, help: &str, x: i64| {
            let g = Gauge::<i64>::default();
            g.set(x);
            reg.register(name, help, g);
        };
        let flag = i64::from;
        int(
            &mut reg,
            "conntrack_entries",
            "Tracked flows (confirmed: both ends have spoken).",
            self.conntrack_entries as i64,
        );
        int(
            &mut reg,
            "unconfirmed_flows",
            "Flows not confirmed yet (handshakes in progress, spoofed SYNs, stray packets).",
            self.unconfirmed_entries as i64,
        );
        int(
            &mut reg,
            "under_flood",
            "1 while more flows wait for confirmation than a control plane makes (a flood).",
            flag(self.under_flood()),
        );
        counter(
            &mut reg,
            "table_swaps",
            "Maglev table swaps.",
            self.table_swaps,
        );
        if let Some(ms) = self.last_reconcile_ms {
            gauge(
                &mut reg,
                "reconcile_seconds",
                "Last health transition to table swap.",
                ms / 1000.0,
            );
        }
        if let Some(ms) = self.last_detection_ms {
            gauge(
                &mut reg,
                "detection_seconds",
                "Last first failed check to table swap.",
                ms / 1000.0,
            );
        }
        int(
            &mut reg,
            "all_backends_down",
            "1 when no backend is healthy (table fails open).",
            flag(self.fail_open),
        );
        int(
            &mut reg,
            "announcing",
            "1 when this node answers ARP for the VIPs.",
            flag(self.announcing),
        );
        if let Some(a) = self.announcing6 {
            int(
                &mut reg,
                "announcing6",
                "1 when this node answers NDP for the IPv6 VIPs.",
                flag(a),
            );
        }
        if let Some(a) = &self.arp {
            counter(
                &mut reg,
                "arp_answered",
                "ARP requests for our addresses answered.",
                a.answered,
            );
            counter(
                &mut reg,
                "arp_rate_limited",
                "ARP requests for our addresses not answered: over the requester's or the segment's budget.",
                a.rate_limited,
            );
        }
        if let Some(n) = &self.ndp {
            counter(
                &mut reg,
                "ndp_solicitations",
                "Neighbour solicitations that passed the checks.",
                n.solicitations,
            );
            counter(
                &mut reg,
                "ndp_answered",
                "Neighbour solicitations answered for the IPv6 VIPs.",
                n.answered,
            );
            let drops = Family::<Labels, Counter>::default();
            for (k, v) in &n.dropped {
                drops.get_or_create(&labels(&[("reason", k)])).inc_by(*v);
            }
            reg.register(
                "ndp_dropped",
                "Frames on the NDP socket dropped by the checks, by reason.",
                drops,
            );
        }
        if let Some(v) = &self.vrrp6 {
            int(
                &mut reg,
                "vrrp6_master",
                "1 when this node is the master of the IPv6 VRRP instance.",
                flag(v.state == "master"),
            );
            int(
                &mut reg,
                "vrrp6_priority",
                "Priority the IPv6 VRRP instance advertises now.",
                i64::from(v.priority),
            );
            counter(
                &mut reg,
                "vrrp6_transitions",
                "IPv6 VRRP state changes.",
                v.transitions,
            );
        }
        if let Some(r) = &self.route {
            let fam = Family::<Labels, Gauge>::default();
            let table = r.table.to_string();
            fam.get_or_create(&labels(&[
                ("table", &table),
                ("reason", r.reason.as_deref().unwrap_or("")),
            ]))
            .set(i64::from(r.announced));
            reg.register(
                "route_announced",
                "1 when the VIP routes are in the routing table (routed mode); reason says why not.",
                fam,
            );
        }
        if let Some(v) = &self.vrrp {
            int(
                &mut reg,
                "vrrp_master",
                "1 when this node is the VRRP master.",
                flag(v.state == "master"),
            );
            int(
                &mut reg,
                "vrrp_priority",
                "Priority advertised now (after the health penalty).",
                i64::from(v.priority),
            );
            counter(
                &mut reg,
                "vrrp_transitions",
                "VRRP state changes.",
                v.transitions,
            );
            counter(
                &mut reg,
                "vrrp_adverts_sent",
                "VRRP advertisements sent.",
                v.adverts_sent,
            );
            counter(
                &mut reg,
                "vrrp_adverts_received",
                "VRRP advertisements accepted.",
                v.adverts_received,
            );
            let drops = Family::<Labels, Counter>::default();
            for (k, n) in &v.drops {
                drops.get_or_create(&labels(&[("reason", k)])).inc_by(*n);
            }
            reg.register(
                "vrrp_dropped",
                "VRRP advertisements dropped, by reason.",
                drops,
            );
            int(
                &mut reg,
                "vrrp_guard_holding",
                "1 while adverts for our VRID in another version or with another password arrive (never master then).",
                flag(v.guard_holding),
            );
            let conflicts = Family::<Labels, Counter>::default();
            for c in &v.conflicts {
                let version = c.version.to_string();
                conflicts
                    .get_or_create(&labels(&[
                        ("peer", &c.peer),
                        ("reason", &c.reason),
                        ("version", &version),
                    ]))
                    .inc_by(c.adverts);
            }
            reg.register(
                "vrrp_conflict_adverts",
                "Adverts for our VRID we cannot join, by sender, reason and version.",
                conflicts,
            );
            counter(
                &mut reg,
                "vrrp_conflicts_evicted",
                "Senders of such adverts forgotten (list full, or silent for 5 minutes).",
                v.conflicts_evicted,
            );
            counter(
                &mut reg,
                "vrrp_guard_logs_suppressed",
                "Mismatch guard log lines not written (over the per-minute budget).",
                v.guard_logs_suppressed,
            );
        }
        if let Some(sy) = &self.sync {
            sync_metrics(&mut reg, sy);
        }
        if let Some(d) = &self.discovery {
            let polls = Family::<Labels, Counter>::default();
            for (result, n) in [("ok", d.polls_ok), ("failed", d.polls_failed)] {
                polls
                    .get_or_create(&labels(&[("result", result)]))
                    .inc_by(n);
            }
            reg.register("discovery_polls", "EndpointSlice polls by result.", polls);
            int(
                &mut reg,
                "discovery_masters",
                "Ready API servers in the last EndpointSlice answer.",
                d.masters.len() as i64,
            );
            if let Some(age) = d.last_success_age_s {
                gauge(
                    &mut reg,
                    "discovery_last_success_age_seconds",
                    "Time since the last EndpointSlice answer.",
                    age,
                );
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }

    /// The table `xvip status` prints.
    pub fn to_table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "xvip on {} ({} XDP, {}), VIPs {}, table {} slots{}",
            self.interface,
            self.xdp_mode,
            self.mode,
            self.vips.join(" "),
            self.table_size,
            if self.fail_open {
                ", ALL BACKENDS DOWN (fail open)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "{:<22} {:>5} {:>6} {:<9} {:>7} {:>9} {:>10} {:>9}  WHY DOWN",
            "BACKEND", "INDEX", "WEIGHT", "HEALTH", "SHARE", "CHECK", "PACKETS", "FLOWS"
        );
        let total: usize = self.backends.iter().map(|b| b.slots).sum::<usize>().max(1);
        for b in &self.backends {
            let _ = writeln!(
                o,
                "{:<22} {:>5} {:>6} {:<9} {:>6.1}% {:>9} {:>10} {:>9}  {}",
                b.addr,
                b.index,
                b.weight,
                if b.healthy { "up" } else { "DOWN" },
                100.0 * b.slots as f64 / total as f64,
                b.check_ms
                    .map(|m| format!("{m:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                b.packets,
                b.new_flows,
                match (b.healthy, &b.mac) {
                    (false, _) => b.last_error.as_deref().unwrap_or(""),
                    (true, None) => b.next_hop.as_deref().unwrap_or(""),
                    (true, Some(_)) => "",
                }
            );
        }
        let _ = writeln!(
            o,
            "conntrack entries: {}   unconfirmed: {}   table swaps: {}",
            self.conntrack_entries, self.unconfirmed_entries, self.table_swaps
        );
        if self.under_flood() {
            let _ = writeln!(
                o,
                "UNDER A FLOOD: {} flows wait for confirmation (spoofed SYNs or stray packets); \
                 confirmed flows and real handshakes are still served",
                self.unconfirmed_entries
            );
        }
        let nonzero: Vec<String> = self
            .reasons
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "packets: {}",
            if nonzero.is_empty() {
                "none yet".into()
            } else {
                nonzero.join(" ")
            }
        );
        if let Some(r) = &self.route {
            let _ = writeln!(o, "{}", r.line());
        }
        if let Some(a) = &self.arp {
            let _ = writeln!(
                o,
                "arp: {} answered, {} not answered (rate limit)",
                a.answered, a.rate_limited
            );
        }
        if let Some(n) = &self.ndp {
            let dropped: Vec<String> = n
                .dropped
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                o,
                "ndp: {} ({} solicitations, {} answered), dropped: {}",
                if self.announcing6 == Some(true) {
                    "announcing"
                } else {
                    "silent"
                },
                n.solicitations,
                n.answered,
                if dropped.is_empty() {
                    "none".into()
                } else {
                    dropped.join(" ")
                }
            );
        }
        if let Some(sy) = &self.sync {
            sync_table(&mut o, sy);
        }
        for (family, v) in [("", &self.vrrp), (" (IPv6)", &self.vrrp6)] {
            let Some(v) = v else { continue };
            let drops: Vec<String> = v
                .drops
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let _ = writeln!(
                o,
                "vrrp{family} vrid {}: {} (master {}), priority {}/{}, {}preempt, {} transitions, adverts sent {} received {}, dropped: {}",
                v.vrid,
                v.state.to_uppercase(),
                v.master.as_deref().unwrap_or("unknown"),
                v.priority,
                v.configured_priority,
                if v.preempt { "" } else { "no " },
                v.transitions,
                v.adverts_sent,
                v.adverts_received,
                if drops.is_empty() {
                    "none".into()
                } else {
                    drops.join(" ")
                }
            );
            for c in &v.conflicts {
                let _ = writeln!(
                    o,
                    "vrrp conflict: {} speaks VRRPv{} ({}, {} adverts, last {:.1}s ago){}",
                    c.peer,
                    c.version,
                    c.reason,
                    c.adverts,
                    c.last_seen_s,
                    match (c.active, c.owner) {
                        (true, true) => {
                            ": guard HOLDING, this node will not become master (it owns the VRID)"
                        }
                        (true, false) => ": guard HOLDING (backup only)",
                        _ => "",
                    }
                );
            }
        }
        if let Some(d) = &self.discovery {
            let _ = writeln!(
                o,
                "discovery from {}: masters {}, last answer {}, polls ok {} failed {}{}",
                d.kubeconfig,
                if d.masters.is_empty() {
                    "none yet".into()
                } else {
                    d.masters.join(" ")
                },
                d.last_success_age_s
                    .map_or("never".into(), |a| format!("{a:.1}s ago")),
                d.polls_ok,
                d.polls_failed,
                d.last_error
                    .as_ref()
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            );
        }
        o
    }
}

/// Produces the current status on demand.
pub type StatusSource = Arc<dyn Fn() -> Status + Send + Sync>;

/// Connections served at once. One more evicts the oldest, so idle clients cannot lock
/// out a scraper.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request (and to read the answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head (request line and headers) read.
pub const MAX_REQUEST_BYTES: usize = 8192;

/// The answer to a request that hyper parsed: `GET` only.
/// `xvip_sync_*`: conntrack sync's peers, traffic, installs and rejections.
fn sync_metrics(reg: &mut Registry, sy: &crate::sync::SyncStatus) {
    let counter = |reg: &mut Registry, name: &str, help: &str, n: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        reg.register(name, help, c);
    };
    let synced = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for p in &sy.peers {
        synced
            .get_or_create(&labels(&[("peer", &p.address)]))
            .set(i64::from(p.synced));
        if let Some(l) = p.lag_ms {
            lag.get_or_create(&labels(&[("peer", &p.address)]))
                .set(l as f64 / 1e3);
        }
    }
    reg.register(
        "sync_peer_synced",
        "1 when a full dump from the peer was received (its records are installed).",
        synced,
    );
    reg.register(
        "sync_peer_lag_seconds",
        "Time since the peer's last sync message (heartbeats every second).",
        lag,
    );
    for (name, help, v) in [
        (
            "sync_events",
            "Flow events the data path wrote to the sync ring buffer.",
            sy.events,
        ),
        (
            "sync_ring_full",
            "Flow events lost to a full sync ring buffer.",
            sy.ring_full,
        ),
        (
            "sync_sent_messages",
            "Sync datagrams sent.",
            sy.sent_messages,
        ),
        ("sync_sent_records", "Flow records sent.", sy.sent_records),
        (
            "sync_sent_bytes",
            "Sync bytes sent (UDP payload).",
            sy.sent_bytes,
        ),
        (
            "sync_send_errors",
            "Sync datagrams that could not be sent.",
            sy.send_errors,
        ),
        (
            "sync_received_messages",
            "Authenticated sync datagrams received.",
            sy.received_messages,
        ),
        (
            "sync_received_records",
            "Flow records received in authenticated datagrams.",
            sy.received_records,
        ),
        (
            "sync_installed_records",
            "Received records written into the maps.",
            sy.installed,
        ),
        (
            "sync_dumps_sent",
            "Full dumps sent on request.",
            sy.dumps_sent,
        ),
        (
            "sync_dumps_received",
            "Full dumps received complete.",
            sy.dumps_received,
        ),
    ] {
        counter(reg, name, help, v);
    }
    for (name, help, m) in [
        (
            "sync_rejected_messages",
            "Sync datagrams rejected before any record was used, by reason.",
            &sy.rejected,
        ),
        (
            "sync_skipped_records",
            "Authenticated records not installed, by reason.",
            &sy.skipped,
        ),
    ] {
        let fam = Family::<Labels, Counter>::default();
        for (k, n) in m {
            fam.get_or_create(&labels(&[("reason", k)])).inc_by(*n);
        }
        reg.register(name, help, fam);
    }
    if let Some(age) = sy.last_full_dump_s {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(age);
        reg.register(
            "sync_last_full_dump_age_seconds",
            "Time since the last complete full dump received.",
            g,
        );
    }
}

/// `xvip status` lines of conntrack sync.
fn sync_table(o: &mut String, sy: &crate::sync::SyncStatus) {
    let join = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let _ = writeln!(
        o,
        "sync ({}): events {} (ring full {}), sent {} records in {} messages ({} bytes), received {} records, installed {}, rejected: {}, skipped: {}, last full dump {}",
        sy.transport,
        sy.events,
        sy.ring_full,
        sy.sent_records,
        sy.sent_messages,
        sy.sent_bytes,
        sy.received_records,
        sy.installed,
        join(&sy.rejected),
        join(&sy.skipped),
        sy.last_full_dump_s
            .map(|s| format!("{s:.1}s ago"))
            .unwrap_or_else(|| "never".into())
    );
    for p in &sy.peers {
        let _ = writeln!(
            o,
            "sync peer {}: {}, lag {}, lost messages {}, last dump {}",
            p.address,
            if p.synced { "synced" } else { "NOT SYNCED" },
            p.lag_ms
                .map(|l| format!("{l} ms"))
                .unwrap_or_else(|| "-".into()),
            p.lost_messages,
            p.last_dump_s
                .map(|s| format!("{s:.1}s ago ({} flows)", p.last_dump_records))
                .unwrap_or_else(|| "never".into())
        );
    }
}

fn route(
    req: &hyper::Request<hyper::body::Incoming>,
    source: &StatusSource,
) -> Response<Full<Bytes>> {
    let plain = |code: StatusCode, body: String| (code, "text/plain", body);
    let (code, ctype, body) = if req.method() != hyper::Method::GET {
        plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed\n".into(),
        )
    } else {
        match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                source().to_prometheus(),
            ),
            "/status" => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&source()).unwrap_or_default(),
            ),
            // Rendering the status takes the daemon's state lock: a stuck main loop makes
            // this hang, and the liveness probe notices.
            "/healthz" => {
                let _ = source();
                plain(StatusCode::OK, "ok\n".into())
            }
            _ => plain(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    if code == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    }
    resp
}

async fn answer(mut conn: tokio::net::TcpStream, source: StatusSource) {
    let service = hyper::service::service_fn(|req| {
        let resp = route(&req, &source);
        async move { Ok::<_, std::convert::Infallible>(resp) }
    });
    // One request per connection; hyper answers a malformed head with 400 and one over
    // MAX_REQUEST_BYTES with 431, and drops a client that is silent for REQUEST_TIMEOUT.
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .title_case_headers(true)
        .max_buf_size(MAX_REQUEST_BYTES)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(&mut conn), service);
    // The request's and the answer's time together (a client that stops reading).
    let _ = tokio::time::timeout(2 * REQUEST_TIMEOUT, served).await;
    // Closing with unread bytes (a refused request's rest) would reset the connection
    // before the client reads why: end our side, then read a little of what it still sends.
    let _ = conn.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = 16 * MAX_REQUEST_BYTES;
        while left > 0 {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

/// Serves `/metrics`, `/status` (JSON) and `/healthz` until the task is dropped: `GET` only,
/// at most [`MAX_CONNECTIONS`] at once (a new one evicts the oldest), each with
/// [`REQUEST_TIMEOUT`] to send a request of at most [`MAX_REQUEST_BYTES`].
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    source: StatusSource,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        // Connection tasks by arrival; only this loop touches it.
        let mut live: std::collections::VecDeque<tokio::task::AbortHandle> =
            std::collections::VecDeque::new();
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                // Out of descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            live.retain(|t| !t.is_finished());
            while live.len() >= MAX_CONNECTIONS {
                if let Some(oldest) = live.pop_front() {
                    oldest.abort();
                }
            }
            let task = tokio::spawn(answer(conn, source.clone()));
            live.push_back(task.abort_handle());
        }
    }))
}

/// Where a daemon records its status address for `xvip status --interface`: keyed like the
/// pins, by network namespace then interface (`/run/xvip/<netns inode>/<if>.addr`).
pub fn record_path(interface: &str) -> std::path::PathBuf {
    let ns = crate::dataplane::pins::netns_inode().unwrap_or(0);
    std::path::Path::new("/run/xvip")
        .join(ns.to_string())
        .join(format!("{interface}.addr"))
}

/// Records the status address of the daemon serving `interface`.
pub fn record_addr(interface: &str, addr: SocketAddr) {
    let p = record_path(interface);
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&p, addr.to_string()) {
        log::debug!("cannot record the status address in {}: {e}", p.display());
    }
}

/// Removes the record of [`record_addr`] (the daemon is stopping).
pub fn forget_addr(interface: &str) {
    let p = record_path(interface);
    let _ = std::fs::remove_file(&p);
    if let Some(dir) = p.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The status address recorded by the daemon serving `interface`.
///
/// # Errors
/// When no daemon recorded one.
pub fn recorded_addr(interface: &str) -> anyhow::Result<SocketAddr> {
    let p = record_path(interface);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        anyhow::anyhow!("no xvip recorded for {interface} in {} ({e})", p.display())
    })?;
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: '{}': {e}", p.display(), text.trim()))
}

/// Fetches the status document from a running daemon.
///
/// # Errors
/// When the daemon cannot be reached or answers something else.
pub async fn fetch(addr: SocketAddr) -> anyhow::Result<Status> {
    let conn = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timeout connecting to xvip at {addr}"))?
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot reach xvip at {addr}: {e} (is `xvip run` running, with this --metrics-addr?)"
        )
    })?;
    let _ = conn.set_nodelay(true);
    let req = hyper::Request::get("/status")
        .header(header::HOST, "xvip")
        .header(header::CONNECTION, "close")
        .body(http_body_util::Empty::new())?;
    let exchange = async {
        let (resp, _conn) = crate::http::send(conn, req).await?;
        anyhow::ensure!(
            resp.status() == StatusCode::OK,
            "xvip at {addr} answered {}",
            resp.status()
        );
        Ok(crate::http::body(resp, 16 << 20).await?)
    };
    let body = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("timeout reading the status from xvip at {addr}"))??;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
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

    #[test]
    fn a_flood_of_unconfirmed_flows_shows_in_the_table_and_the_metrics() {
        let mut s = sample();
        s.unconfirmed_entries = 12;
        assert!(!s.under_flood());
        assert!(!s.to_table().contains("UNDER A FLOOD"));
        assert!(s.to_prometheus().contains("xvip_under_flood 0"));
        s.unconfirmed_entries = lb_common::UNCONFIRMED_FLOOD_THRESHOLD as usize;
        assert!(s.under_flood());
        assert!(s.to_table().contains("UNDER A FLOOD"));
        let m = s.to_prometheus();
        assert!(m.contains("xvip_under_flood 1"));
        assert!(m.contains(&format!(
            "xvip_unconfirmed_flows {}",
            lb_common::UNCONFIRMED_FLOOD_THRESHOLD
        )));
    }

    #[test]
    fn sync_shows_in_the_table_and_the_metrics() {
        let mut s = sample();
        assert!(
            !s.to_prometheus().contains("xvip_sync_"),
            "no sync, no sync metrics"
        );
        s.sync = Some(crate::sync::SyncStatus {
            transport: "multicast 224.0.0.18:8849 on eth0".into(),
            peers: vec![crate::sync::SyncPeerStatus {
                address: "192.0.2.3".into(),
                synced: true,
                lag_ms: Some(250),
                lost_messages: 2,
                last_dump_s: Some(4.0),
                last_dump_records: 1000,
            }],
            sent_records: 7,
            installed: 5,
            rejected: [("replay".to_string(), 3u64)].into(),
            skipped: [("unknown_backend".to_string(), 1u64)].into(),
            last_full_dump_s: Some(4.0),
            ..Default::default()
        });
        let t = s.to_table();
        assert!(
            t.contains("sync (multicast 224.0.0.18:8849 on eth0)"),
            "{t}"
        );
        assert!(t.contains("rejected: replay=3"), "{t}");
        assert!(
            t.contains("sync peer 192.0.2.3: synced, lag 250 ms, lost messages 2"),
            "{t}"
        );
        let m = s.to_prometheus();
        for line in [
            "xvip_sync_peer_synced{peer=\"192.0.2.3\"} 1",
            "xvip_sync_peer_lag_seconds{peer=\"192.0.2.3\"} 0.25",
            "xvip_sync_sent_records_total 7",
            "xvip_sync_installed_records_total 5",
            "xvip_sync_rejected_messages_total{reason=\"replay\"} 3",
            "xvip_sync_skipped_records_total{reason=\"unknown_backend\"} 1",
            "xvip_sync_last_full_dump_age_seconds 4.0",
        ] {
            assert!(m.contains(line), "{line} in\n{m}");
        }
    }

    #[test]
    fn prometheus_exposition_has_help_type_and_labelled_samples() {
        let t = sample().to_prometheus();
        assert!(t.contains("# TYPE xvip_backend_healthy gauge"));
        assert!(t.contains("xvip_backend_healthy{backend=\"192.0.2.11:6443\"} 1"));
        assert!(t.contains("xvip_packets_total{reason=\"tx_forward\"} 5"));
        assert!(t.contains("xvip_backend_slots{backend=\"192.0.2.11:6443\"} 7"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("xvip_"), "{line}");
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }

    #[test]
    fn ipv6_vips_backends_vrrp6_and_ndp_show_in_the_table_and_the_metrics() {
        let mut st = sample();
        st.vips = vec!["192.0.2.100:6443".into(), "[2001:db8::100]:6443".into()];
        st.backends.push(BackendStatus {
            addr: "[2001:db8::11]:6443".into(),
            healthy: true,
            weight: 1,
            ..Default::default()
        });
        st.announcing6 = Some(true);
        st.vrrp6 = Some(VrrpStatus {
            vrid: 51,
            state: "master".into(),
            master: Some("fe80::2".into()),
            priority: 150,
            version: 3,
            ..Default::default()
        });
        st.ndp = Some(NdpStatus {
            solicitations: 4,
            answered: 3,
            dropped: [("hop_limit".to_string(), 2u64)].into(),
        });
        let t = st.to_table();
        assert!(
            t.contains("VIPs 192.0.2.100:6443 [2001:db8::100]:6443"),
            "{t}"
        );
        assert!(t.contains("[2001:db8::11]:6443"), "{t}");
        assert!(
            t.contains("vrrp (IPv6) vrid 51: MASTER (master fe80::2)"),
            "{t}"
        );
        assert!(
            t.contains("ndp: announcing (4 solicitations, 3 answered), dropped: hop_limit=2"),
            "{t}"
        );
        let m = st.to_prometheus();
        for want in [
            "xvip_announcing6 1",
            "xvip_vrrp6_master 1",
            "xvip_vrrp6_priority 150",
            "xvip_ndp_answered_total 3",
            "xvip_ndp_dropped_total{reason=\"hop_limit\"} 2",
            "xvip_backend_healthy{backend=\"[2001:db8::11]:6443\"} 1",
        ] {
            assert!(m.contains(want), "{want}: {m}");
        }
        // Without IPv6 VIPs none of the IPv6 metrics appear.
        assert!(!sample().to_prometheus().contains("announcing6"));
    }

    #[test]
    fn arp_answers_and_the_rate_limit_show_in_metrics_and_the_table() {
        let mut st = sample();
        assert!(!st.to_prometheus().contains("xvip_arp_"));
        st.arp = Some(ArpStatus {
            answered: 7,
            rate_limited: 19_000,
        });
        let m = st.to_prometheus();
        for want in [
            "xvip_arp_answered_total 7",
            "xvip_arp_rate_limited_total 19000",
        ] {
            assert!(m.contains(want), "{want}: {m}");
        }
        let t = st.to_table();
        assert!(
            t.contains("arp: 7 answered, 19000 not answered (rate limit)"),
            "{t}"
        );
    }

    #[test]
    fn the_mismatch_guard_shows_in_metrics_and_the_table() {
        let mut st = sample();
        st.vrrp = Some(VrrpStatus {
            vrid: 51,
            state: "backup".into(),
            version: 3,
            auth: "none".into(),
            guard_holding: true,
            drops: [("version_mismatch".to_string(), 12u64)].into(),
            conflicts: vec![VrrpConflict {
                peer: "192.0.2.2".into(),
                reason: "version_mismatch".into(),
                version: 2,
                adverts: 12,
                last_seen_s: 0.4,
                active: true,
                owner: true,
            }],
            ..Default::default()
        });
        let t = st.to_prometheus();
        assert!(t.contains("xvip_vrrp_guard_holding 1"), "{t}");
        assert!(
            t.contains("xvip_vrrp_dropped_total{reason=\"version_mismatch\"} 12"),
            "{t}"
        );
        assert!(
            t.contains(
                "xvip_vrrp_conflict_adverts_total{peer=\"192.0.2.2\",reason=\"version_mismatch\",version=\"2\"} 12"
            ),
            "{t}"
        );
        let table = st.to_table();
        assert!(
            table.contains("vrrp conflict: 192.0.2.2 speaks VRRPv2 (version_mismatch, 12 adverts, last 0.4s ago): guard HOLDING"),
            "{table}"
        );
        // Older daemons' documents (no guard fields) still parse.
        let mut json = serde_json::to_value(&st).unwrap();
        for k in ["version", "auth", "guard_holding", "conflicts"] {
            json["vrrp"].as_object_mut().unwrap().remove(k);
        }
        let back: Status = serde_json::from_value(json).unwrap();
        assert!(!back.vrrp.unwrap().guard_holding);
    }

    /// Every optional part present, so every metric shows.
    fn full_sample() -> Status {
        let mut s = sample();
        s.backends[0].check_ms = Some(1.5);
        s.vip_traffic = vec![VipTraffic {
            vip: "192.0.2.100:6443".into(),
            packets: 3,
            bytes: 300,
            new_flows: 1,
        }];
        s.last_reconcile_ms = Some(0.4);
        s.last_detection_ms = Some(610.0);
        s.vrrp = Some(VrrpStatus {
            state: "master".into(),
            drops: [("bad_auth".to_string(), 2u64)].into(),
            conflicts: vec![VrrpConflict {
                peer: "192.0.2.2".into(),
                reason: "version_mismatch".into(),
                version: 2,
                adverts: 1,
                ..Default::default()
            }],
            ..Default::default()
        });
        s.discovery = Some(DiscoveryStatus {
            masters: vec!["192.0.2.11:6443".into()],
            last_success_age_s: Some(0.5),
            ..Default::default()
        });
        s
    }

    /// `TYPE name{label,...}` for every sample of an exposition; the type is found under
    /// the sample's name or, for a counter, the name without `_total` (OpenMetrics).
    fn shapes(text: &str) -> std::collections::BTreeSet<String> {
        let mut types = BTreeMap::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            }
        }
        let mut out = std::collections::BTreeSet::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, _) = l.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let mut keys: Vec<&str> = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| kv.split_once('=').unwrap().0)
                .collect();
            keys.sort_unstable();
            let kind = types
                .get(name)
                .or_else(|| types.get(name.trim_end_matches("_total")))
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            out.insert(format!("{kind} {name}{{{}}}", keys.join(",")));
        }
        out
    }

    #[test]
    fn metric_names_types_and_labels_are_those_dashboards_know() {
        // Taken from the hand-written exposition this one replaced.
        let before = [
            "counter xvip_backend_bytes_total{backend}",
            "counter xvip_backend_checks_total{backend,result}",
            "counter xvip_backend_new_flows_total{backend}",
            "counter xvip_backend_packets_total{backend}",
            "counter xvip_backend_transitions_total{backend}",
            "counter xvip_discovery_polls_total{result}",
            "counter xvip_packets_total{reason}",
            "counter xvip_table_swaps_total{}",
            "counter xvip_vip_bytes_total{vip}",
            "counter xvip_vip_new_flows_total{vip}",
            "counter xvip_vip_packets_total{vip}",
            "counter xvip_vrrp_adverts_received_total{}",
            "counter xvip_vrrp_adverts_sent_total{}",
            "counter xvip_vrrp_conflict_adverts_total{peer,reason,version}",
            "counter xvip_vrrp_conflicts_evicted_total{}",
            "counter xvip_vrrp_dropped_total{reason}",
            "counter xvip_vrrp_guard_logs_suppressed_total{}",
            "counter xvip_vrrp_transitions_total{}",
            "gauge xvip_all_backends_down{}",
            "gauge xvip_announcing{}",
            "gauge xvip_backend_check_latency_seconds{backend}",
            "gauge xvip_backend_healthy{backend}",
            "gauge xvip_backend_slots{backend}",
            "gauge xvip_backend_weight{backend}",
            "gauge xvip_conntrack_entries{}",
            "gauge xvip_detection_seconds{}",
            "gauge xvip_discovery_last_success_age_seconds{}",
            "gauge xvip_discovery_masters{}",
            "gauge xvip_reconcile_seconds{}",
            "gauge xvip_under_flood{}",
            "gauge xvip_unconfirmed_flows{}",
            "gauge xvip_vrrp_guard_holding{}",
            "gauge xvip_vrrp_master{}",
            "gauge xvip_vrrp_priority{}",
        ];
        let now = shapes(&full_sample().to_prometheus());
        let before: std::collections::BTreeSet<String> =
            before.iter().map(|s| s.to_string()).collect();
        assert_eq!(now, before, "{}", full_sample().to_prometheus());
    }

    #[tokio::test]
    async fn the_endpoint_serves_status_that_fetch_reads_back() {
        let source: StatusSource = Arc::new(sample);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let task = serve(addr, source).await.unwrap();
        assert_eq!(fetch(addr).await.unwrap(), sample());
        task.abort();
    }
}
