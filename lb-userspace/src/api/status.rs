//! What the daemon reports: the status document (`/status`, `xvip status`), the Prometheus
//! text exposition (`/metrics`) and the small HTTP endpoint serving both plus `/healthz`.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

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
    /// Routers seen advertising our VRID that way.
    #[serde(default)]
    pub conflicts: Vec<VrrpConflict>,
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
    /// Whether this node answers ARP for the VIPs.
    pub announcing: bool,
    pub uptime_s: f64,
    /// VRRP failover state, when enabled.
    #[serde(default)]
    pub vrrp: Option<VrrpStatus>,
    /// Master discovery, when enabled.
    #[serde(default)]
    pub discovery: Option<DiscoveryStatus>,
    /// The VIP routes of routed mode (`--announce route`), when enabled.
    #[serde(default)]
    pub route: Option<crate::route::RouteStatus>,
}

impl Status {
    /// Whether the VIP is under a flood: more unconfirmed flows than a control plane makes
    /// (each real one lives a round trip), as spoofed SYNs or bare ACKs leave.
    pub fn under_flood(&self) -> bool {
        self.unconfirmed_entries >= lb_common::UNCONFIRMED_FLOOD_THRESHOLD as usize
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP xvip_{name} {help}\n# TYPE xvip_{name} {kind}");
            for (labels, v) in rows {
                if labels.is_empty() {
                    let _ = writeln!(out, "xvip_{name} {v}");
                } else {
                    let _ = writeln!(out, "xvip_{name}{{{labels}}} {v}");
                }
            }
        };
        let per_backend = |f: &dyn Fn(&BackendStatus) -> String| {
            self.backends
                .iter()
                .map(|b| (format!("backend=\"{}\"", b.addr), f(b)))
                .collect::<Vec<_>>()
        };
        metric(
            "backend_healthy",
            "gauge",
            "1 when the backend passes its health check.",
            per_backend(&|b| (b.healthy as u8).to_string()),
        );
        metric(
            "backend_slots",
            "gauge",
            "Maglev table slots owned by the backend.",
            per_backend(&|b| b.slots.to_string()),
        );
        metric(
            "backend_weight",
            "gauge",
            "Configured weight (0 = draining).",
            per_backend(&|b| b.weight.to_string()),
        );
        metric(
            "backend_check_latency_seconds",
            "gauge",
            "Latency of the last successful health check.",
            self.backends
                .iter()
                .filter_map(|b| {
                    b.check_ms.map(|ms| {
                        (
                            format!("backend=\"{}\"", b.addr),
                            format!("{:.6}", ms / 1000.0),
                        )
                    })
                })
                .collect(),
        );
        metric(
            "backend_checks_total",
            "counter",
            "Health checks by result.",
            {
                let mut r = Vec::new();
                for b in &self.backends {
                    r.push((
                        format!("backend=\"{}\",result=\"ok\"", b.addr),
                        b.checks_ok.to_string(),
                    ));
                    r.push((
                        format!("backend=\"{}\",result=\"failed\"", b.addr),
                        b.checks_failed.to_string(),
                    ));
                }
                r
            },
        );
        metric(
            "backend_transitions_total",
            "counter",
            "Health state changes.",
            per_backend(&|b| b.transitions.to_string()),
        );
        metric(
            "backend_packets_total",
            "counter",
            "Packets forwarded to or from the backend.",
            per_backend(&|b| b.packets.to_string()),
        );
        metric(
            "backend_bytes_total",
            "counter",
            "Bytes forwarded to or from the backend.",
            per_backend(&|b| b.bytes.to_string()),
        );
        metric(
            "backend_new_flows_total",
            "counter",
            "Flows assigned to the backend.",
            per_backend(&|b| b.new_flows.to_string()),
        );
        metric(
            "packets_total",
            "counter",
            "Packets seen by the XDP program, by verdict reason.",
            self.reasons
                .iter()
                .map(|(k, v)| (format!("reason=\"{k}\""), v.to_string()))
                .collect(),
        );
        for (name, help, f) in [
            (
                "vip_packets_total",
                "Packets forwarded for the VIP (both directions).",
                (|v: &VipTraffic| v.packets) as fn(&VipTraffic) -> u64,
            ),
            (
                "vip_bytes_total",
                "Bytes forwarded for the VIP (both directions).",
                |v: &VipTraffic| v.bytes,
            ),
            (
                "vip_new_flows_total",
                "Flows created for the VIP.",
                |v: &VipTraffic| v.new_flows,
            ),
        ] {
            metric(
                name,
                "counter",
                help,
                self.vip_traffic
                    .iter()
                    .map(|v| (format!("vip=\"{}\"", v.vip), f(v).to_string()))
                    .collect(),
            );
        }
        metric(
            "conntrack_entries",
            "gauge",
            "Tracked flows (confirmed: both ends have spoken).",
            vec![(String::new(), self.conntrack_entries.to_string())],
        );
        metric(
            "unconfirmed_flows",
            "gauge",
            "Flows not confirmed yet (handshakes in progress, spoofed SYNs, stray packets).",
            vec![(String::new(), self.unconfirmed_entries.to_string())],
        );
        metric(
            "under_flood",
            "gauge",
            "1 while more flows wait for confirmation than a control plane makes (a flood).",
            vec![(String::new(), (self.under_flood() as u8).to_string())],
        );
        metric(
            "table_swaps_total",
            "counter",
            "Maglev table swaps.",
            vec![(String::new(), self.table_swaps.to_string())],
        );
        if let Some(ms) = self.last_reconcile_ms {
            metric(
                "reconcile_seconds",
                "gauge",
                "Last health transition to table swap.",
                vec![(String::new(), format!("{:.6}", ms / 1000.0))],
            );
        }
        if let Some(ms) = self.last_detection_ms {
            metric(
                "detection_seconds",
                "gauge",
                "Last first failed check to table swap.",
                vec![(String::new(), format!("{:.6}", ms / 1000.0))],
            );
        }
        metric(
            "all_backends_down",
            "gauge",
            "1 when no backend is healthy (table fails open).",
            vec![(String::new(), (self.fail_open as u8).to_string())],
        );
        metric(
            "announcing",
            "gauge",
            "1 when this node answers ARP for the VIPs.",
            vec![(String::new(), (self.announcing as u8).to_string())],
        );
        if let Some(r) = &self.route {
            metric(
                "route_announced",
                "gauge",
                "1 when the VIP routes are in the routing table (routed mode); reason says why not.",
                vec![(
                    format!(
                        "table=\"{}\",reason=\"{}\"",
                        r.table,
                        r.reason.as_deref().unwrap_or("")
                    ),
                    (r.announced as u8).to_string(),
                )],
            );
        }
        if let Some(v) = &self.vrrp {
            let one = |x: String| vec![(String::new(), x)];
            metric(
                "vrrp_master",
                "gauge",
                "1 when this node is the VRRP master.",
                one(((v.state == "master") as u8).to_string()),
            );
            metric(
                "vrrp_priority",
                "gauge",
                "Priority advertised now (after the health penalty).",
                one(v.priority.to_string()),
            );
            metric(
                "vrrp_transitions_total",
                "counter",
                "VRRP state changes.",
                one(v.transitions.to_string()),
            );
            metric(
                "vrrp_adverts_sent_total",
                "counter",
                "VRRP advertisements sent.",
                one(v.adverts_sent.to_string()),
            );
            metric(
                "vrrp_adverts_received_total",
                "counter",
                "VRRP advertisements accepted.",
                one(v.adverts_received.to_string()),
            );
            metric(
                "vrrp_dropped_total",
                "counter",
                "VRRP advertisements dropped, by reason.",
                v.drops
                    .iter()
                    .map(|(k, n)| (format!("reason=\"{k}\""), n.to_string()))
                    .collect(),
            );
            metric(
                "vrrp_guard_holding",
                "gauge",
                "1 while adverts for our VRID in another version or with another password arrive (never master then).",
                one((v.guard_holding as u8).to_string()),
            );
            metric(
                "vrrp_conflict_adverts_total",
                "counter",
                "Adverts for our VRID we cannot join, by sender, reason and version.",
                v.conflicts
                    .iter()
                    .map(|c| {
                        (
                            format!(
                                "peer=\"{}\",reason=\"{}\",version=\"{}\"",
                                c.peer, c.reason, c.version
                            ),
                            c.adverts.to_string(),
                        )
                    })
                    .collect(),
            );
        }
        if let Some(d) = &self.discovery {
            metric(
                "discovery_polls_total",
                "counter",
                "EndpointSlice polls by result.",
                vec![
                    ("result=\"ok\"".into(), d.polls_ok.to_string()),
                    ("result=\"failed\"".into(), d.polls_failed.to_string()),
                ],
            );
            metric(
                "discovery_masters",
                "gauge",
                "Ready API servers in the last EndpointSlice answer.",
                vec![(String::new(), d.masters.len().to_string())],
            );
            if let Some(age) = d.last_success_age_s {
                metric(
                    "discovery_last_success_age_seconds",
                    "gauge",
                    "Time since the last EndpointSlice answer.",
                    vec![(String::new(), format!("{age:.3}"))],
                );
            }
        }
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
                if b.healthy {
                    ""
                } else {
                    b.last_error.as_deref().unwrap_or("")
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
        if let Some(v) = &self.vrrp {
            let drops: Vec<String> = v
                .drops
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let _ = writeln!(
                o,
                "vrrp vrid {}: {} (master {}), priority {}/{}, {}preempt, {} transitions, adverts sent {} received {}, dropped: {}",
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
                    if c.active {
                        ": guard HOLDING, this node will not become master"
                    } else {
                        ""
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

/// The path of a request head (everything before the blank line), or the status line to
/// refuse it with: only `GET` over HTTP/1.x.
///
/// # Errors
/// `400 Bad Request` for a malformed request line, `405 Method Not Allowed` for any method
/// but `GET`.
pub fn parse_request(head: &[u8]) -> Result<&str, &'static str> {
    const BAD: &str = "400 Bad Request";
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(line)).map_err(|_| BAD)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Err(BAD);
    }
    if method != "GET" {
        return Err("405 Method Not Allowed");
    }
    Ok(target.split('?').next().unwrap_or(target))
}

/// Reads a request head, at most [`MAX_REQUEST_BYTES`].
async fn read_head(conn: &mut tokio::net::TcpStream) -> Result<Vec<u8>, Option<&'static str>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() >= MAX_REQUEST_BYTES {
            return Err(Some("431 Request Header Fields Too Large"));
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn answer(mut conn: tokio::net::TcpStream, source: StatusSource) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut conn)).await {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(None)) => return,
        Ok(Err(Some(code))) => Err(code),
        Err(_) => Err("408 Request Timeout"),
    };
    let parsed = head.as_deref().map_err(|c| *c).and_then(parse_request);
    let refused = parsed.is_err();
    let (code, ctype, body) = match parsed {
        Ok("/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            source().to_prometheus(),
        ),
        Ok("/status") => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&source()).unwrap_or_default(),
        ),
        // Rendering the status takes the daemon's state lock: a stuck main loop makes this
        // hang, and the liveness probe notices.
        Ok("/healthz") => {
            let _ = source();
            ("200 OK", "text/plain", "ok\n".into())
        }
        Ok(_) => ("404 Not Found", "text/plain", "not found\n".into()),
        Err(code) => (code, "text/plain", format!("{code}\n")),
    };
    let allow = if code.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let resp = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.write_all(resp.as_bytes())).await;
    if refused {
        // Closing with unread bytes would reset the connection before the client reads why:
        // end our side, then read a little of what it still sends.
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
    let ns = crate::pins::netns_inode().unwrap_or(0);
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
    let mut conn = tokio::time::timeout(
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
    conn.write_all(b"GET /status HTTP/1.1\r\nHost: xvip\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut body)).await??;
    let text = String::from_utf8_lossy(&body);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(serde_json::from_str(json)?)
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
