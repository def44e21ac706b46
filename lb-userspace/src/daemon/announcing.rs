//! Who answers for the addresses: VRRP transitions, the notify hooks, ARP and NDP
//! answers and announcements, other claimants of the VIPs, and the Service addresses.

use std::{collections::BTreeSet, net::Ipv4Addr};

use super::state::Daemon;
use crate::{announce::arp::ArpSocket, config::Announce, wire::arp::Arp};

/// How long a node that won the IPv4 election waits, after asking who answers for the
/// VIP, before it announces. A master that is alive and answers ARP but whose adverts are
/// not heard here (multicast filtered, a one-way partition) answers within it, and this
/// node yields (`announce::claims`) without ever sending a gratuitous ARP that would pull
/// the clients away from it. A takeover from a dead master costs this much more time
/// without an owner (the data path keeps forwarding meanwhile: the clients' ARP entries
/// still point to a node that serves, or to the dead one).
pub const TAKEOVER_PROBE: std::time::Duration = std::time::Duration::from_millis(30);

impl Daemon {
    /// A VRRP state change to the notify hooks: the instance is named by its VRID (and
    /// family), the priority is the one advertised now.
    pub(super) fn notify(&self, state: crate::announce::vrrp::State, v6: bool) {
        let (Some(n), Some(v)) = (&self.notifier, &self.settings.vrrp) else {
            return;
        };
        let priority = self
            .vrrp_report
            .as_ref()
            .filter(|_| !v6)
            .and_then(|r| r.lock().ok().map(|s| s.priority))
            .unwrap_or(v.priority);
        let name = format!("vrid{}{}", v.vrid, if v6 { "-ipv6" } else { "" });
        n.changed(&name, state, priority);
    }

    pub(super) fn announcing(&self) -> bool {
        self.shared.lock().expect("poisoned").announcing
    }

    /// On every attached interface (see `on_arp`), for the VIPs and the Service addresses.
    pub(super) fn gratuitous_arp(&self) {
        self.gratuitous_arp_for(&self.vip_addrs);
        self.gratuitous_arp_for(&self.service_addrs);
        // --services: the IPv6 Service addresses follow the same owner (svc).
        self.unsolicited_na_for(&self.service6_addrs);
    }

    pub(super) fn gratuitous_arp_for(&self, addrs: &[Ipv4Addr]) {
        if addrs.is_empty() {
            return;
        }
        if let Err(e) = self.arp.announce(self.iface.mac, addrs) {
            log::warn!("gratuitous ARP on {}: {e}", self.iface.name);
        }
        for (i, sock) in &self.others {
            if let Err(e) = sock.announce(i.mac, addrs) {
                log::warn!("gratuitous ARP on {}: {e}", i.name);
            }
        }
    }

    /// The Service addresses changed (`--services`): new ones get a gratuitous round at once
    /// while this node announces; gone ones are no longer answered.
    pub(super) fn on_services(&mut self, addrs: &BTreeSet<std::net::IpAddr>) {
        self.on_services6(addrs);
        let v4: Vec<Ipv4Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                std::net::IpAddr::V4(a) => Some(*a),
                std::net::IpAddr::V6(_) => None,
            })
            .filter(|a| !self.vip_addrs.contains(a))
            .collect();
        let new: Vec<Ipv4Addr> = v4
            .iter()
            .filter(|a| !self.service_addrs.contains(a))
            .copied()
            .collect();
        self.service_addrs = v4;
        // Routed mode: the Service /32s (and, svc, IPv6 /128s) ride with the VIPs' routes
        // (announced while this node can serve, withdrawn with them); gone ones are
        // withdrawn now.
        if let Some(spec) = &mut self.route_spec {
            let before = std::mem::take(&mut spec.vips);
            spec.vips = self
                .settings
                .vips
                .iter()
                .map(|v| std::net::IpAddr::V4(v.addr))
                .chain(self.service_addrs.iter().map(|a| (*a).into()))
                .chain(self.service6_addrs.iter().map(|a| (*a).into()))
                .collect();
            let gone: Vec<std::net::IpAddr> = before
                .into_iter()
                .filter(|a| !spec.vips.contains(a))
                .collect();
            if !gone.is_empty() {
                let old = crate::announce::route::RouteSpec {
                    vips: gone,
                    ..spec.clone()
                };
                if let Err(e) = crate::announce::route::withdraw(&old) {
                    log::warn!(
                        "routed mode: withdrawing Service routes {:?}: {e}",
                        old.vips
                    );
                }
            }
            super::routed::sync_route(&self.shared, spec, false, true);
            return;
        }
        if self.announcing() {
            self.gratuitous_arp_for(&new);
        }
    }

    pub(super) fn announcing6(&self) -> bool {
        self.shared.lock().expect("poisoned").announcing6
    }

    /// Unsolicited neighbour advertisements for the IPv6 addresses (the gratuitous-ARP
    /// equivalent).
    pub(super) fn unsolicited_na(&self) {
        self.unsolicited_na_for(&self.vip6_addrs);
    }

    fn unsolicited_na_for(&self, addrs: &[std::net::Ipv6Addr]) {
        if addrs.is_empty() {
            return;
        }
        for (i, ndp) in &self.ndp {
            if let Err(e) = ndp.announce(i.mac, addrs) {
                log::warn!("unsolicited neighbour advertisement on {}: {e}", i.name);
            }
        }
    }

    /// The IPv6 Service addresses changed (`--services`, svc): the NDP sockets hold their
    /// solicited-node groups, new ones are advertised at once while this node announces.
    /// Routed mode routes them as /128s (`on_services`).
    fn on_services6(&mut self, addrs: &BTreeSet<std::net::IpAddr>) {
        let v6: Vec<std::net::Ipv6Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                std::net::IpAddr::V6(a) => Some(*a),
                std::net::IpAddr::V4(_) => None,
            })
            .filter(|a| !self.vip6_addrs.contains(a))
            .collect();
        let new: Vec<std::net::Ipv6Addr> = v6
            .iter()
            .filter(|a| !self.service6_addrs.contains(a))
            .copied()
            .collect();
        if v6 != self.service6_addrs {
            for (i, ndp) in &self.ndp {
                if let Err(e) = ndp.set_extra(&v6) {
                    log::warn!("services: IPv6 Service addresses on {}: {e}", i.name);
                }
            }
        }
        self.service6_addrs = v6;
        if !new.is_empty() && self.announcing() {
            self.unsolicited_na_for(&new);
        }
    }

    /// A neighbour solicitation: answered for our IPv6 addresses while announcing them
    /// (the v6 VIPs by the IPv6 election's master; the IPv6 Service addresses, svc, by the
    /// IPv4 one's, which owns every Service address).
    pub(super) fn on_ns(&self, n: usize, ns: &crate::wire::ndp::Solicitation) {
        let Some((i, ndp)) = self.ndp.get(n) else {
            return;
        };
        let na = self
            .announcing6()
            .then(|| ns.answer(&self.vip6_addrs, i.mac))
            .flatten()
            .or_else(|| {
                self.announcing()
                    .then(|| ns.answer(&self.service6_addrs, i.mac))
                    .flatten()
            });
        if let Some(na) = na {
            ndp.answer(ns, &na);
        }
    }

    /// Conntrack sync treats this node as master while either family's VRRP instance is
    /// (an IPv6-only node has only the IPv6 one): its live flows are then never
    /// overwritten by another node's records, and it sends the periodic refresh.
    pub(super) fn sync_master(&self) {
        if let Some(s) = &self.sync {
            let sh = self.shared.lock().expect("poisoned");
            s.set_master(sh.announcing || sh.announcing6);
        }
    }

    /// An ARP packet on an interface (socket `sock`, MAC `mac`): answered for our
    /// addresses while announcing. Every attached interface answers, with its own MAC:
    /// clients may sit on any, and the masters reach the SNAT address (and the VIP) on
    /// theirs. Next hops are the kernel's business (`resolve_next_hops`), not learnt here.
    pub(super) fn on_arp(&mut self, sock: &ArpSocket, mac: [u8; 6], a: &Arp) {
        self.on_claim(a);
        if self.announcing() {
            for vip in self.vip_addrs.iter().chain(&self.service_addrs) {
                if let Some((reply, to)) = a.answer_for(*vip, mac) {
                    sock.answer(&reply, to, a.sender_ip);
                }
            }
        }
    }

    /// Every second: routes re-asserted (a flushed table, or a failed change, heals within
    /// a tick). The next-hop thread keeps its own second.
    pub(super) fn on_tick(&self) {
        if let Some(spec) = &self.route_spec {
            super::routed::sync_route(&self.shared, spec, false, true);
        }
    }

    /// An ARP packet that claims one of our VIPs from a MAC not ours (a gratuitous ARP, a
    /// reply): another xvip that outranks this node makes it stop answering, one it
    /// outranks gets a gratuitous round back, a foreign host is reported
    /// (`announce::claims`).
    pub(super) fn on_claim(&mut self, a: &Arp) {
        if !self.vip_addrs.contains(&a.sender_ip)
            || a.sender_mac == self.iface.mac
            || self.others.iter().any(|(i, _)| i.mac == a.sender_mac)
        {
            return;
        }
        let holds = match self.settings.vrrp {
            Some(_) => self.vrrp_master,
            None => self.settings.announce == Announce::Arp,
        };
        let ours = self.mark();
        let now = std::time::Instant::now();
        let decision = self
            .claims
            .on_claim(now, a.sender_mac, a.sender_ip, a.mark, ours, holds);
        {
            let mut s = self.shared.lock().expect("poisoned");
            s.claims = Some(self.claims.status(now));
            if decision == crate::announce::claims::Decision::Yield {
                s.announcing = false;
            }
        }
        match decision {
            crate::announce::claims::Decision::Yield => {
                self.garp_burst = 0;
                self.sync_master();
            }
            crate::announce::claims::Decision::Reassert => self.gratuitous_arp(),
            crate::announce::claims::Decision::None => {}
        }
    }

    /// What this node's ARP frames say of it: its VRID, its election's priority now and its
    /// primary address (none without VRRP).
    pub(super) fn mark(&self) -> Option<crate::wire::arp::Mark> {
        let v = self.settings.vrrp.as_ref()?;
        let priority = self
            .vrrp_report
            .as_ref()
            .and_then(|r| r.lock().ok().map(|s| s.priority))
            .filter(|p| *p > 0)
            .unwrap_or(v.priority);
        Some(crate::wire::arp::Mark {
            priority,
            primary: self.iface.ipv4,
            vrid: v.vrid,
        })
    }

    /// Every `claims::PROBE`: the frames' mark follows the priority; a gratuitous round
    /// put off by a recent one is paid; while yielded, asks who has the VIP (the winner's
    /// answer keeps the yield), and once the winner has been silent for `claims::HOLD`
    /// answers again if the election still says so.
    pub(super) fn on_claims_tick(&mut self) {
        let mark = self.mark();
        self.arp.set_mark(mark);
        for (_, sock) in &self.others {
            sock.set_mark(mark);
        }
        if self.claims.reassert_due(std::time::Instant::now()) && self.announcing() {
            self.gratuitous_arp();
        }
        if self.claims.yielded_to().is_none() {
            return;
        }
        let yielded = self.claims.yielded(std::time::Instant::now());
        if let Some(c) = &mut self.shared.lock().expect("poisoned").claims {
            c.yielded_to = self
                .claims
                .yielded_to()
                .map(|m| crate::net::iface::format_mac(&m));
        }
        if yielded {
            if let Some(vip) = self.vip_addrs.first() {
                let probe = Arp::request(self.iface.mac, self.iface.ipv4, *vip);
                if let Err(e) = self.arp.send(&probe, [0xff; 6]) {
                    log::debug!("ARP probe for {vip}: {e}");
                }
            }
        } else if self.vrrp_master {
            // The winner fell silent: asked again before announcing.
            self.on_vrrp(crate::announce::vrrp::State::Master, false, true);
        }
    }

    /// A VRRP transition of one family's instance (`v6`: the IPv6 one, which answers NDP):
    /// a master announces (and sends a burst of gratuitous ARP or unsolicited NAs), a backup
    /// stops. An IPv4 master that has yielded to another xvip claiming the VIPs
    /// (`on_claim`) waits until that one is gone; an IPv4 transition ends any burst.
    pub(super) fn on_vrrp(
        &mut self,
        state: crate::announce::vrrp::State,
        v6: bool,
        from_silence: bool,
    ) {
        let elected = state == crate::announce::vrrp::State::Master;
        let master = if v6 {
            elected
        } else {
            self.vrrp_master = elected;
            if !elected {
                self.claims.end_yield();
            }
            self.garp_burst = 0;
            self.takeover_at = None;
            if elected
                && from_silence
                && !self.claims.yielded(std::time::Instant::now())
                && self.probe_vips()
            {
                // Announced once the probe's window passes (`on_takeover_probed`).
                self.takeover_at = Some(tokio::time::Instant::now() + TAKEOVER_PROBE);
                false
            } else {
                elected && !self.claims.yielded(std::time::Instant::now())
            }
        };
        {
            let mut s = self.shared.lock().expect("poisoned");
            *if v6 {
                &mut s.announcing6
            } else {
                &mut s.announcing
            } = master;
        }
        self.sync_master();
        if master {
            self.take_over(v6);
        }
    }

    /// Asks the segment who answers for the first VIP (a marked ARP request from our
    /// primary address); false when it could not be sent (then nothing is waited for).
    fn probe_vips(&self) -> bool {
        let Some(vip) = self.vip_addrs.first() else {
            return false;
        };
        let probe = Arp::request(self.iface.mac, self.iface.ipv4, *vip);
        match self.arp.send(&probe, [0xff; 6]) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("ARP probe for {vip} before announcing: {e}");
                false
            }
        }
    }

    /// The takeover probe's window passed: announce, unless an xvip that outranks this
    /// node answered for the VIP meanwhile (`on_claim` yielded: it is alive and answers,
    /// only its VRRP is not heard here) or the election was lost again.
    pub(super) fn on_takeover_probed(&mut self) {
        self.takeover_at = None;
        if !self.vrrp_master || self.claims.yielded(std::time::Instant::now()) {
            return;
        }
        self.shared.lock().expect("poisoned").announcing = true;
        self.sync_master();
        self.take_over(false);
    }

    /// A family's election won (`v6`: the IPv6 instance's): its addresses announced at once
    /// (gratuitous ARP, unsolicited NAs), the clients in its flow table told the new owner
    /// directly (`takeover`), and the burst of further announcements started.
    fn take_over(&mut self, v6: bool) {
        let senders = if v6 {
            self.unsolicited_na();
            super::takeover::Senders::Ndp(self.ndp.clone(), self.vip6_addrs.clone())
        } else {
            self.gratuitous_arp();
            let socks = std::iter::once((self.iface.clone(), self.arp.clone()))
                .chain(self.others.iter().cloned())
                .collect();
            super::takeover::Senders::Arp(socks, self.vip_addrs.clone())
        };
        super::takeover::tell_known_clients(&self.shared, senders, &self.telling[usize::from(v6)]);
        self.garp_burst = crate::announce::vrrp::GARP_BURST - 1;
        self.garp_burst_at =
            tokio::time::Instant::now() + crate::announce::vrrp::GARP_BURST_SPACING;
    }

    pub(super) fn on_garp_burst(&mut self) {
        self.garp_burst -= 1;
        self.garp_burst_at += crate::announce::vrrp::GARP_BURST_SPACING;
        if self.announcing() {
            self.gratuitous_arp();
        }
        if self.announcing6() {
            self.unsolicited_na();
        }
    }
}
