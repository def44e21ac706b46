//! A received record as this node's map entries, and a local entry as a record. Pure: the
//! node's own VIPs, backends, interface and clock come in as [`Local`].
//!
//! Generic over the family (`u32`, `Ip6`): IPv6 records go to `VIPS6`, `BACKENDS6`,
//! `CONNTRACK6`, `REVERSE6` by the same rules.
//!
//! What is the receiver's own: the VIP index (from its `VIPS` by address, port, protocol),
//! the backend's slot (from its `BACKENDS` by address and port: a backend it does not have
//! is skipped), the interface index (its attach interface), and the clock (`last_seen` is
//! the receiver's now minus the age carried in the record). Sequence windows are not
//! carried: entries are installed with `*_FLAG_SEQ_KNOWN` clear, so the first FIN or RST
//! is honoured and the next packet in each direction records the stream position again.
//!
//! Every field is checked against what the receiver itself has (a key holder's record is
//! no more trusted than its fields): the VIP must be one of its VIPs, the backend one of its
//! present backends, the SNAT address the VIP's and the SNAT port in its `--snat-ports`
//! range (DNAT: the client's own), the protocol the state's, the client a unicast host (not
//! a VIP, a backend, zero, multicast or broadcast; a unicast MAC; a port) and its VLAN tag
//! a well-formed one. Whether the tuple is free is the receiver's to check in its
//! `REVERSE` (`mod.rs`): a record never takes a live flow's tuple.

use std::collections::HashMap;

use lb_common::{
    BACKEND_FLAG_LOCAL, Backend, CtEntry, FlowKey, RevEntry, TCP_CLOSING_TIMEOUT_NS,
    TCP_ESTABLISHED_TIMEOUT_NS, TCP_SYN_TIMEOUT_NS, UDP_TIMEOUT_NS, VIP_FLAG_DNAT, VipKey, VipMeta,
    ct_state,
};

use crate::wire::sync::{Event, Record, WireAddr};

/// Why a record was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// No such VIP here.
    UnknownVip,
    /// The backend (address and port) is not in this node's backend set.
    UnknownBackend,
    /// The backend is this node itself: its flows enter the local stack untranslated.
    LocalBackend,
    /// Translated to a source address this node does not use for the VIP (SNAT to a node
    /// address: such flows cannot move).
    SnatMismatch,
    /// Already expired by its age.
    Expired,
    /// A state no confirmed flow has.
    BadState,
    /// The protocol is not the state's (a TCP state on UDP, or neither).
    BadProto,
    /// The client is not a unicast host: a zero, multicast, broadcast or loopback address,
    /// one of this node's VIPs or backends, port 0, or a multicast or zero MAC.
    BadClient,
    /// A VLAN tag with bits no frame's tag has.
    BadVlan,
}

impl Skip {
    /// Label in metrics and status.
    pub fn name(self) -> &'static str {
        match self {
            Skip::UnknownVip => "unknown_vip",
            Skip::UnknownBackend => "unknown_backend",
            Skip::LocalBackend => "local_backend",
            Skip::SnatMismatch => "snat_mismatch",
            Skip::Expired => "expired",
            Skip::BadState => "bad_state",
            Skip::BadProto => "bad_proto",
            Skip::BadClient => "bad_client",
            Skip::BadVlan => "bad_vlan",
        }
    }
}

/// What the receiver knows of itself (of one family).
#[derive(Clone, Debug)]
pub struct Local<A = u32> {
    /// `VIPS` (`VIPS6`) as read from its map.
    pub vips: HashMap<VipKey<A>, VipMeta<A>>,
    /// Present backends by (address, port) raw: slot and value.
    pub backends: HashMap<(A, u16), (u32, Backend<A>)>,
    /// The attach interface.
    pub ifindex: u32,
    /// `CLOCK_MONOTONIC` now, nanoseconds.
    pub now_ns: u64,
    /// `--snat-ports`, inclusive, host order (full NAT's translated source ports).
    pub snat_ports: (u16, u16),
}

impl<A> Default for Local<A> {
    fn default() -> Self {
        Self {
            vips: HashMap::new(),
            backends: HashMap::new(),
            ifindex: 0,
            now_ns: 0,
            snat_ports: (1, u16::MAX),
        }
    }
}

/// Idle timeout of a confirmed state (the data path's).
pub fn timeout_ns(state: u8) -> Option<u64> {
    match state {
        ct_state::TCP_SYN => Some(TCP_SYN_TIMEOUT_NS),
        ct_state::TCP_ESTABLISHED => Some(TCP_ESTABLISHED_TIMEOUT_NS),
        ct_state::TCP_OPEN => Some(lb_common::TCP_OPEN_TIMEOUT_NS),
        ct_state::TCP_CLOSING => Some(TCP_CLOSING_TIMEOUT_NS),
        ct_state::UDP => Some(UDP_TIMEOUT_NS),
        _ => None,
    }
}

/// The key replies of a flow arrive with (its tuple).
pub fn reverse_key<A: Copy>(key: &FlowKey<A>, e: &CtEntry<A>) -> FlowKey<A> {
    FlowKey {
        src_addr: e.backend_addr,
        dst_addr: e.snat_addr,
        src_port: e.backend_port,
        dst_port: e.snat_port,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// The entries to install for a `Confirmed` record: forward, and the reverse with its key.
///
/// # Errors
/// [`Skip`].
#[allow(clippy::type_complexity)]
pub fn entries<A: WireAddr>(
    r: &Record<A>,
    l: &Local<A>,
) -> Result<(CtEntry<A>, FlowKey<A>, RevEntry<A>), Skip> {
    let timeout = timeout_ns(r.state).ok_or(Skip::BadState)?;
    let want_proto = if r.state == ct_state::UDP { 17 } else { 6 };
    if r.key.proto != want_proto {
        return Err(Skip::BadProto);
    }
    let age = u64::from(r.age_ms) * 1_000_000;
    if age > timeout {
        return Err(Skip::Expired);
    }
    let client = r.key.src_addr;
    if !client.is_unicast_host()
        || r.key.src_port == 0
        || r.client_mac[0] & 1 != 0
        || r.client_mac == [0; 6]
        || l.vips.keys().any(|v| v.addr == client)
        || l.backends.keys().any(|(a, _)| *a == client)
    {
        return Err(Skip::BadClient);
    }
    let tag_bits = lb_common::VLAN_TAGGED | lb_common::VLAN_8021AD | 0xffff;
    if r.client_vlan != 0
        && (r.client_vlan & lb_common::VLAN_TAGGED == 0 || r.client_vlan & !tag_bits != 0)
    {
        return Err(Skip::BadVlan);
    }
    let vip = VipKey {
        addr: r.key.dst_addr,
        port: r.key.dst_port,
        proto: r.key.proto,
        _pad: 0,
    };
    let meta = l.vips.get(&vip).ok_or(Skip::UnknownVip)?;
    let &(idx, backend) = l
        .backends
        .get(&(r.backend_addr, r.backend_port))
        .ok_or(Skip::UnknownBackend)?;
    if backend.flags & BACKEND_FLAG_LOCAL != 0 {
        return Err(Skip::LocalBackend);
    }
    let snat_ok = if meta.flags & VIP_FLAG_DNAT != 0 {
        r.snat_addr == r.key.src_addr && r.snat_port == r.key.src_port
    } else {
        let port = u16::from_be(r.snat_port);
        r.snat_addr == meta.snat_addr && (l.snat_ports.0..=l.snat_ports.1).contains(&port)
    };
    if !snat_ok {
        return Err(Skip::SnatMismatch);
    }
    // 0 means "released" to the data path: never install it.
    let last_seen_ns = l.now_ns.saturating_sub(age).max(1);
    let ct = CtEntry {
        last_seen_ns,
        backend_idx: idx,
        backend_addr: r.backend_addr,
        snat_addr: r.snat_addr,
        backend_port: r.backend_port,
        snat_port: r.snat_port,
        state: r.state,
        flags: 0,
        client_mac: r.client_mac,
        vip_index: meta.index,
        client_ifindex: l.ifindex,
        seq_next: 0,
        client_vlan: r.client_vlan,
    };
    let rev = RevEntry {
        last_seen_ns,
        client_addr: r.key.src_addr,
        vip_addr: r.key.dst_addr,
        client_port: r.key.src_port,
        vip_port: r.key.dst_port,
        backend_idx: idx,
        client_mac: r.client_mac,
        state: r.state,
        flags: 0,
        vip_index: meta.index,
        client_ifindex: l.ifindex,
        seq_next: 0,
        client_vlan: r.client_vlan,
    };
    Ok((ct, reverse_key(&r.key, &ct), rev))
}

/// A local confirmed entry as a record (a dump, or a confirmed event), `None` when it has
/// expired or is not a confirmed state.
pub fn record_of<A: Copy>(
    event: Event,
    key: &FlowKey<A>,
    e: &CtEntry<A>,
    now_ns: u64,
) -> Option<Record<A>> {
    let age = now_ns.saturating_sub(e.last_seen_ns);
    if event == Event::Confirmed && (e.last_seen_ns == 0 || age > timeout_ns(e.state)?) {
        return None;
    }
    Some(Record {
        event: Some(event),
        key: *key,
        state: e.state,
        backend_addr: e.backend_addr,
        backend_port: e.backend_port,
        snat_addr: e.snat_addr,
        snat_port: e.snat_port,
        client_mac: e.client_mac,
        client_vlan: e.client_vlan,
        age_ms: u32::try_from(age / 1_000_000).unwrap_or(u32::MAX),
    })
}

/// A record that only names a flow (closing, removed).
pub fn bare<A: Copy + Default>(event: Event, key: &FlowKey<A>) -> Record<A> {
    Record {
        event: Some(event),
        key: *key,
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{BACKEND_FLAG_PRESENT, ip_raw, port_raw};

    const VIP: u32 = ip_raw([192, 0, 2, 100]);
    const CLIENT: u32 = ip_raw([192, 0, 2, 10]);
    const M2: u32 = ip_raw([192, 0, 2, 12]);

    fn local() -> Local {
        let mut l = Local {
            ifindex: 7,
            now_ns: 1_000_000_000_000,
            ..Local::default()
        };
        l.vips.insert(
            VipKey {
                addr: VIP,
                port: port_raw(6443),
                proto: 6,
                _pad: 0,
            },
            VipMeta {
                index: 3,
                ring_size: 7,
                active_half: 0,
                flags: 0,
                snat_addr: VIP,
                _pad: 0,
            },
        );
        l.backends.insert(
            (M2, port_raw(6443)),
            (
                9,
                Backend {
                    addr: M2,
                    flags: BACKEND_FLAG_PRESENT,
                    ifindex: 7,
                    port: port_raw(6443),
                    mac: [2, 0, 0, 0, 0, 12],
                    _pad: [0; 4],
                },
            ),
        );
        l
    }

    fn sender_entry() -> (FlowKey, CtEntry) {
        let key = FlowKey {
            src_addr: CLIENT,
            dst_addr: VIP,
            src_port: port_raw(40001),
            dst_port: port_raw(6443),
            proto: 6,
            _pad: [0; 3],
        };
        let e = CtEntry {
            last_seen_ns: 5_000_000_000,
            backend_idx: 1, // the sender's slot: means nothing here
            backend_addr: M2,
            snat_addr: VIP,
            backend_port: port_raw(6443),
            snat_port: port_raw(23456),
            state: ct_state::TCP_ESTABLISHED,
            flags: lb_common::CT_FLAG_SEQ_KNOWN,
            client_mac: [2, 0, 0, 0, 0, 10],
            vip_index: 0,
            client_ifindex: 2,
            seq_next: 123_456,
            client_vlan: 0,
        };
        (key, e)
    }

    #[test]
    fn a_record_becomes_entries_in_the_receivers_terms() {
        let (key, e) = sender_entry();
        // Sent 2 s after its last packet on the sender (whose clock is another).
        let r = record_of(Event::Confirmed, &key, &e, 7_000_000_000).expect("live");
        assert_eq!(r.age_ms, 2000);
        let l = local();
        let (ct, rkey, rev) = entries(&r, &l).expect("installs");
        assert_eq!(ct.backend_idx, 9, "the receiver's slot for the backend");
        assert_eq!(rev.backend_idx, 9);
        assert_eq!(ct.vip_index, 3);
        assert_eq!(ct.client_ifindex, 7, "the receiver's interface");
        assert_eq!(
            ct.last_seen_ns,
            l.now_ns - 2_000_000_000,
            "the receiver's clock"
        );
        assert_eq!(
            ct.flags & lb_common::CT_FLAG_SEQ_KNOWN,
            0,
            "window re-armed"
        );
        assert_eq!(rev.flags, 0);
        assert_eq!((ct.snat_addr, ct.snat_port), (VIP, port_raw(23456)));
        assert_eq!(ct.client_mac, e.client_mac);
        assert_eq!(
            rkey,
            FlowKey {
                src_addr: M2,
                dst_addr: VIP,
                src_port: port_raw(6443),
                dst_port: port_raw(23456),
                proto: 6,
                _pad: [0; 3]
            }
        );
        assert_eq!((rev.client_addr, rev.client_port), (CLIENT, key.src_port));
    }

    #[test]
    fn records_the_receiver_cannot_use_are_skipped_with_a_reason() {
        let (key, e) = sender_entry();
        let r = record_of(Event::Confirmed, &key, &e, 5_000_000_000).expect("live");
        let mut l = local();
        let mut other = r;
        other.backend_addr = ip_raw([192, 0, 2, 99]);
        assert_eq!(entries(&other, &l), Err(Skip::UnknownBackend));
        let mut other = r;
        other.backend_port = port_raw(443);
        assert_eq!(entries(&other, &l), Err(Skip::UnknownBackend));
        let mut other = r;
        other.key.dst_port = port_raw(443);
        assert_eq!(entries(&other, &l), Err(Skip::UnknownVip));
        let mut other = r;
        other.snat_addr = ip_raw([192, 0, 2, 2]); // SNAT to the sender's own address
        assert_eq!(entries(&other, &l), Err(Skip::SnatMismatch));
        let mut other = r;
        other.state = ct_state::UNCONFIRMED;
        assert_eq!(entries(&other, &l), Err(Skip::BadState));
        let mut other = r;
        other.state = ct_state::TCP_CLOSING;
        other.age_ms = 11_000;
        assert_eq!(entries(&other, &l), Err(Skip::Expired));
        l.backends.get_mut(&(M2, port_raw(6443))).unwrap().1.flags |= BACKEND_FLAG_LOCAL;
        assert_eq!(entries(&r, &l), Err(Skip::LocalBackend));
    }

    #[test]
    fn every_field_of_a_record_is_checked_against_the_receiver() {
        let (key, e) = sender_entry();
        let r = record_of(Event::Confirmed, &key, &e, 5_000_000_000).expect("live");
        let mut l = local();
        l.snat_ports = (20000, 29999);
        assert!(entries(&r, &l).is_ok());
        type Edit = (&'static dyn Fn(&mut Record), Skip, &'static str);
        let edits: [Edit; 13] = [
            (&|r| r.key.proto = 17, Skip::BadProto, "a TCP state on UDP"),
            (&|r| r.key.proto = 1, Skip::BadProto, "ICMP"),
            (&|r| r.key.src_addr = 0, Skip::BadClient, "client 0.0.0.0"),
            (
                &|r| r.key.src_addr = ip_raw([224, 0, 0, 1]),
                Skip::BadClient,
                "multicast",
            ),
            (
                &|r| r.key.src_addr = ip_raw([255, 255, 255, 255]),
                Skip::BadClient,
                "broadcast",
            ),
            (
                &|r| r.key.src_addr = VIP,
                Skip::BadClient,
                "the VIP as client",
            ),
            (
                &|r| r.key.src_addr = M2,
                Skip::BadClient,
                "a backend as client",
            ),
            (&|r| r.key.src_port = 0, Skip::BadClient, "port 0"),
            (
                &|r| r.client_mac = [0xff; 6],
                Skip::BadClient,
                "broadcast MAC",
            ),
            (&|r| r.client_mac = [0; 6], Skip::BadClient, "zero MAC"),
            (
                &|r| r.client_vlan = 7,
                Skip::BadVlan,
                "a VID without the tagged bit",
            ),
            (
                &|r| r.client_vlan = 1 << 20 | lb_common::VLAN_TAGGED,
                Skip::BadVlan,
                "stray bits",
            ),
            (
                &|r| r.snat_port = port_raw(1000),
                Skip::SnatMismatch,
                "port outside --snat-ports",
            ),
        ];
        for (edit, want, what) in edits {
            let mut other = r;
            edit(&mut other);
            assert_eq!(entries(&other, &l), Err(want), "{what}");
        }
        let mut tagged = r;
        tagged.client_vlan = lb_common::vlan_tag(0x88a8, 100);
        assert!(entries(&tagged, &l).is_ok(), "a real tag");
    }

    #[test]
    fn expired_or_released_local_entries_are_not_sent() {
        let (key, mut e) = sender_entry();
        e.state = ct_state::UDP;
        assert!(record_of(Event::Confirmed, &key, &e, e.last_seen_ns + UDP_TIMEOUT_NS).is_some());
        assert!(
            record_of(
                Event::Confirmed,
                &key,
                &e,
                e.last_seen_ns + UDP_TIMEOUT_NS + 1
            )
            .is_none()
        );
        e.last_seen_ns = 0;
        assert!(record_of(Event::Confirmed, &key, &e, 1).is_none());
        e.state = ct_state::UNCONFIRMED;
        e.last_seen_ns = 1;
        assert!(record_of(Event::Confirmed, &key, &e, 1).is_none());
    }

    #[test]
    fn an_ipv6_record_becomes_v6_entries_in_the_receivers_terms() {
        use lb_common::{Backend6, CtEntry6, FlowKey6, Ip6, VipKey6, VipMeta6, ip6_raw};
        let a = |last: u8| -> Ip6 {
            ip6_raw([
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
            ])
        };
        let (vip, client, m2) = (a(100), a(10), a(12));
        let mut l: Local<Ip6> = Local {
            ifindex: 7,
            now_ns: 1_000_000_000_000,
            ..Local::default()
        };
        let vkey = VipKey6 {
            addr: vip,
            port: port_raw(6443),
            proto: 6,
            _pad: 0,
        };
        l.vips.insert(
            vkey,
            VipMeta6 {
                index: 4,
                ring_size: 7,
                active_half: 0,
                flags: 0,
                snat_addr: vip,
                _pad: 0,
            },
        );
        l.backends.insert(
            (m2, port_raw(6443)),
            (
                11,
                Backend6 {
                    addr: m2,
                    flags: BACKEND_FLAG_PRESENT,
                    ifindex: 7,
                    port: port_raw(6443),
                    mac: [2, 0, 0, 0, 0, 12],
                    _pad: [0; 4],
                },
            ),
        );
        let key = FlowKey6 {
            src_addr: client,
            dst_addr: vip,
            src_port: port_raw(40001),
            dst_port: port_raw(6443),
            proto: 6,
            _pad: [0; 3],
        };
        let e = CtEntry6 {
            last_seen_ns: 5_000_000_000,
            backend_idx: 1,
            backend_addr: m2,
            snat_addr: vip,
            backend_port: port_raw(6443),
            snat_port: port_raw(23456),
            state: ct_state::TCP_ESTABLISHED,
            flags: lb_common::CT_FLAG_SEQ_KNOWN,
            client_mac: [2, 0, 0, 0, 0, 10],
            vip_index: 0,
            client_ifindex: 2,
            seq_next: 99,
            client_vlan: 0,
        };
        let r = record_of(Event::Confirmed, &key, &e, 6_000_000_000).expect("live");
        let (ct, rkey, rev) = entries(&r, &l).expect("installs");
        assert_eq!(
            (ct.backend_idx, rev.backend_idx),
            (11, 11),
            "the receiver's slot"
        );
        assert_eq!(
            (ct.vip_index, rev.vip_index),
            (4, 4),
            "the receiver's VIP index"
        );
        assert_eq!(ct.client_ifindex, 7);
        assert_eq!(ct.last_seen_ns, l.now_ns - 1_000_000_000);
        assert_eq!(ct.flags, 0);
        assert_eq!(
            rkey,
            FlowKey6 {
                src_addr: m2,
                dst_addr: vip,
                src_port: port_raw(6443),
                dst_port: port_raw(23456),
                proto: 6,
                _pad: [0; 3]
            }
        );
        assert_eq!((rev.client_addr, rev.vip_addr), (client, vip));
        // Unknown here: skipped with the IPv4 reasons.
        let mut other = r;
        other.backend_addr = a(99);
        assert_eq!(entries(&other, &l), Err(Skip::UnknownBackend));
        let mut other = r;
        other.key.dst_addr = a(101);
        assert_eq!(entries(&other, &l), Err(Skip::UnknownVip));
        let mut other = r;
        other.snat_addr = a(2);
        assert_eq!(entries(&other, &l), Err(Skip::SnatMismatch));
    }
}
