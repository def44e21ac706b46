//! The status document as the table `xvip status` prints.

use std::{collections::BTreeMap, fmt::Write as _};

use super::document::Status;

impl Status {
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
            } else if self.backups_serving {
                ", ALL PRIMARIES DOWN (backups serve)"
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
                if b.backup {
                    format!("{} (backup)", b.addr)
                } else {
                    b.addr.clone()
                },
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
                    (false, _) if b.passive_down =>
                        "handshakes failed (passive), back after the check's rise",
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
        if let Some(n) = &self.notify {
            let _ = writeln!(
                o,
                "notify: exec {} ok, {} failed, {} timed out, {} dropped; fifo {} lines, {} dropped",
                n.exec_ok,
                n.exec_failed,
                n.exec_timed_out,
                n.exec_dropped,
                n.fifo_lines,
                n.fifo_dropped
            );
        }
        if let Some(r) = &self.route {
            let _ = writeln!(o, "{}", r.line());
        }
        if let Some(a) = &self.arp {
            let _ = writeln!(
                o,
                "arp: {} answered, {} not answered (rate limit), {} takeover notices",
                a.answered, a.rate_limited, a.takeover_notices
            );
        }
        for c in [&self.claims, &self.claims6].into_iter().flatten() {
            for x in &c.claimants {
                let who = match (&x.primary, x.priority) {
                    (Some(p), Some(pr)) => format!("xvip {p} priority {pr}"),
                    _ => "a host that is not xvip".into(),
                };
                let _ = writeln!(
                    o,
                    "VIP CLAIMED: {} by {} ({who}), {:.0} s ago",
                    x.vip, x.mac, x.last_seen_s
                );
            }
            if let Some(w) = &c.yielded_to {
                let _ = writeln!(o, "yielded the VIPs to {w} (it outranks this node)");
            }
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
        if let Some(sv) = &self.services {
            services_table(&mut o, sv);
        }
        o
    }
}

/// `xvip status` lines of `--services`: the pools, then one line per Service address.
fn services_table(o: &mut String, sv: &crate::services::watch::ServicesStatus) {
    let pools: Vec<String> = sv
        .pools
        .iter()
        .map(|p| format!("{} {}/{}", p.pool, p.used, p.total))
        .collect();
    let _ = writeln!(
        o,
        "services from {}: pools (used/total) {}, status writes {} (conflicts {}), events {}{}{}",
        sv.kubeconfig,
        pools.join(", "),
        sv.status_writes,
        sv.status_conflicts,
        sv.events_sent,
        if sv.ignored > 0 {
            format!(", IGNORED {} beyond the bound", sv.ignored)
        } else {
            String::new()
        },
        sv.last_error
            .as_ref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    );
    for a in &sv.addresses {
        let _ = writeln!(
            o,
            "service {} {}: {}{}",
            a.service,
            a.address.as_deref().unwrap_or("-"),
            if a.announced {
                "ANNOUNCED"
            } else {
                "not announced"
            },
            a.why
                .as_ref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
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
