//! What the daemon reports, assembled and rendered: `document` (the status document's
//! types; each part's type lives with its producer), `metrics` (OpenMetrics text),
//! `table` (what `xvip status` prints), `server` (the endpoint serving both, and the
//! address-record file) and `client` (`xvip status` fetching it).

pub mod client;
pub mod document;
pub mod metrics;
pub mod server;
pub mod table;

/// What each part of the document shows in both renderings.
#[cfg(test)]
mod tests {
    use crate::{
        announce::{
            arp::ArpStatus,
            ndp::NdpStatus,
            vrrp::{VrrpConflict, VrrpStatus},
        },
        api::document::{BackendStatus, Status, tests::sample},
    };

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
    fn backups_and_their_turn_show_in_the_table_and_the_metrics() {
        let mut s = sample();
        s.backends.push(BackendStatus {
            addr: "192.0.2.13:6443".into(),
            healthy: true,
            weight: 1,
            backup: true,
            ..Default::default()
        });
        let t = s.to_table();
        assert!(t.contains("192.0.2.13:6443 (backup)"), "{t}");
        assert!(!t.contains("ALL PRIMARIES DOWN"), "{t}");
        let m = s.to_prometheus();
        for want in [
            "xvip_backend_backup{backend=\"192.0.2.13:6443\"} 1",
            "xvip_backups_serving 0",
        ] {
            assert!(m.contains(want), "{want}: {m}");
        }
        assert!(!m.contains(&format!(
            "xvip_backend_backup{{backend=\"{}\"}} 1",
            s.backends[0].addr
        )));
        s.backups_serving = true;
        assert!(s.to_table().contains("ALL PRIMARIES DOWN (backups serve)"));
        assert!(s.to_prometheus().contains("xvip_backups_serving 1"));
    }

    #[test]
    fn services_show_in_the_table_and_the_metrics() {
        use crate::services::watch::{PoolStatus, ServiceAddr, ServicesStatus};
        let mut s = sample();
        s.services = Some(ServicesStatus {
            kubeconfig: "/etc/kubernetes/admin.conf".into(),
            addresses: vec![
                ServiceAddr {
                    service: "default/web".into(),
                    address: Some("192.0.2.160".into()),
                    announced: true,
                    why: None,
                },
                ServiceAddr {
                    service: "default/late".into(),
                    address: None,
                    announced: false,
                    why: Some("no free IPv4 address in the pools".into()),
                },
            ],
            pools: vec![PoolStatus {
                pool: "default".into(),
                total: 8,
                used: 1,
            }],
            status_writes: 3,
            status_conflicts: 1,
            ..Default::default()
        });
        let t = s.to_table();
        assert!(
            t.contains("pools (used/total) default 1/8, status writes 3 (conflicts 1)"),
            "{t}"
        );
        assert!(
            t.contains("service default/web 192.0.2.160: ANNOUNCED"),
            "{t}"
        );
        assert!(
            t.contains("service default/late -: not announced (no free IPv4"),
            "{t}"
        );
        let m = s.to_prometheus();
        for line in [
            r#"xvip_service_pool_addresses{pool="default",state="used"} 1"#,
            r#"xvip_service_pool_addresses{pool="default",state="free"} 7"#,
            r#"xvip_service_address_announced{service="default/web",address="192.0.2.160"} 1"#,
            "xvip_services_without_address 1",
            r#"xvip_service_status_writes_total{result="conflict"} 1"#,
        ] {
            assert!(m.contains(line), "{line} in {m}");
        }
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
            takeover_notices: 0,
            advertisements: 0,
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
            takeover_notices: 5,
        });
        let m = st.to_prometheus();
        for want in [
            "xvip_arp_answered_total 7",
            "xvip_arp_rate_limited_total 19000",
            "xvip_arp_takeover_notices_total 5",
        ] {
            assert!(m.contains(want), "{want}: {m}");
        }
        let t = st.to_table();
        assert!(
            t.contains("arp: 7 answered, 19000 not answered (rate limit), 5 takeover notices"),
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
}
