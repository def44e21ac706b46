//! The status document as OpenMetrics text (`/metrics`), through `prometheus-client`.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::document::{BackendStatus, Status, VipTraffic};

/// Label pairs of one sample.
type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Status {
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
            (
                "backend_backup",
                "1 for a backup (in the table only while no primary is healthy).",
                |b| i64::from(b.backup),
            ),
            (
                "backend_passive_down",
                "1 while failed handshakes keep the backend out (until its check's rise).",
                |b| i64::from(b.passive_down),
            ),
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
        let handshakes = Family::<Labels, Counter>::default();
        for b in &self.backends {
            for (kind, n) in [
                ("refused", b.handshakes_refused),
                ("unanswered", b.handshakes_unanswered),
            ] {
                handshakes
                    .get_or_create(&labels(&[("backend", &b.addr), ("kind", kind)]))
                    .inc_by(n);
            }
        }
        reg.register(
            "backend_handshakes_failed",
            "New flows' handshakes the backend refused (RST) or left unanswered (passive health).",
            handshakes,
        );
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
            (
                "backend_passive_ejections",
                "Times failed handshakes took the backend out (passive health).",
                |b| b.passive_ejections,
            ),
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
            "backups_serving",
            "1 when no primary is healthy and the backups hold the table.",
            flag(self.backups_serving),
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
            counter(
                &mut reg,
                "arp_takeover_notices",
                "Unicast ARP replies telling a known client (the flow table's) the new owner after a takeover.",
                a.takeover_notices,
            );
        }
        for (c, p, seen) in [
            (&self.claims, "vip", "ARP"),
            (&self.claims6, "vip6", "neighbour advertisements"),
        ] {
            let Some(c) = c else { continue };
            let foreign = c.claimants.iter().filter(|x| x.kind == "foreign").count();
            int(
                &mut reg,
                &format!("{p}_claimants_foreign"),
                &format!(
                    "Hosts that are not xvip claiming a VIP in {seen}, heard in the last 5 minutes."
                ),
                foreign as i64,
            );
            int(
                &mut reg,
                &format!("{p}_claimants_xvip"),
                &format!(
                    "Other xvip nodes claiming a VIP in {seen} (VRRP between us not heard), heard in the last 5 minutes."
                ),
                (c.claimants.len() - foreign) as i64,
            );
            int(
                &mut reg,
                &format!("{p}_yielded"),
                "1 while this node has yielded the VIPs to another xvip that outranks it.",
                flag(c.yielded_to.is_some()),
            );
            counter(
                &mut reg,
                &format!("{p}_yields"),
                "Times this node yielded the VIPs to another xvip claiming them.",
                c.yields,
            );
            counter(
                &mut reg,
                &format!("{p}_claims_rate_limited"),
                "Claims of the VIPs not acted on: over the claimant's or the segment's budget.",
                c.rate_limited,
            );
            counter(
                &mut reg,
                &format!("{p}_claim_probes"),
                "Questions \"who has the VIP\" sent before and while yielding to another xvip.",
                c.probes,
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
            counter(
                &mut reg,
                "ndp_takeover_notices",
                "Unicast advertisements telling a known client (the flow table's) the new owner after a takeover.",
                n.takeover_notices,
            );
            counter(
                &mut reg,
                "ndp_advertisements",
                "Neighbour advertisements for the IPv6 VIPs that passed the checks (claims).",
                n.advertisements,
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
                "vrrp_fault",
                "1 while a tracked interface is down (--vrrp-track-interface): never master.",
                flag(v.state == "fault"),
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
        if let Some(sv) = &self.services {
            services_metrics(&mut reg, sv);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

/// `xvip_service_*`: pool use, each Service address announced or not, status writes.
fn services_metrics(reg: &mut Registry, sv: &crate::services::watch::ServicesStatus) {
    let int = |reg: &mut Registry, name: &str, help: &str, x: i64| {
        let g = Gauge::<i64>::default();
        g.set(x);
        reg.register(name, help, g);
    };
    let pools = Family::<Labels, Gauge>::default();
    for p in &sv.pools {
        for (state, n) in [("used", p.used), ("free", p.total.saturating_sub(p.used))] {
            pools
                .get_or_create(&labels(&[("pool", &p.pool), ("state", state)]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "service_pool_addresses",
        "Addresses of each Service pool, used or free.",
        pools,
    );
    let announced = Family::<Labels, Gauge>::default();
    for a in &sv.addresses {
        if let Some(addr) = &a.address {
            announced
                .get_or_create(&labels(&[("service", &a.service), ("address", addr)]))
                .set(i64::from(a.announced));
        }
    }
    reg.register(
        "service_address_announced",
        "1 while this node answers for the Service address.",
        announced,
    );
    let unassigned = sv.addresses.iter().filter(|a| a.address.is_none()).count();
    int(
        reg,
        "services_without_address",
        "Served Services refused an address (see their events).",
        unassigned as i64,
    );
    int(
        reg,
        "services_ignored",
        "Services beyond the served bound, left alone.",
        sv.ignored as i64,
    );
    let writes = Family::<Labels, Counter>::default();
    for (result, n) in [("ok", sv.status_writes), ("conflict", sv.status_conflicts)] {
        writes
            .get_or_create(&labels(&[("result", result)]))
            .inc_by(n);
    }
    reg.register(
        "service_status_writes",
        "Service status writes by result.",
        writes,
    );
}

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        announce::vrrp::{VrrpConflict, VrrpStatus},
        api::document::tests::sample,
        control::discovery::DiscoveryStatus,
    };

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
            "counter xvip_backend_handshakes_failed_total{backend,kind}",
            "counter xvip_backend_passive_ejections_total{backend}",
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
            "gauge xvip_backend_backup{backend}",
            "gauge xvip_backend_check_latency_seconds{backend}",
            "gauge xvip_backend_healthy{backend}",
            "gauge xvip_backend_passive_down{backend}",
            "gauge xvip_backend_slots{backend}",
            "gauge xvip_backend_weight{backend}",
            "gauge xvip_backups_serving{}",
            "gauge xvip_conntrack_entries{}",
            "gauge xvip_detection_seconds{}",
            "gauge xvip_discovery_last_success_age_seconds{}",
            "gauge xvip_discovery_masters{}",
            "gauge xvip_reconcile_seconds{}",
            "gauge xvip_under_flood{}",
            "gauge xvip_unconfirmed_flows{}",
            "gauge xvip_vrrp_fault{}",
            "gauge xvip_vrrp_guard_holding{}",
            "gauge xvip_vrrp_master{}",
            "gauge xvip_vrrp_priority{}",
        ];
        let now = shapes(&full_sample().to_prometheus());
        let before: std::collections::BTreeSet<String> =
            before.iter().map(|s| s.to_string()).collect();
        assert_eq!(now, before, "{}", full_sample().to_prometheus());
    }
}
