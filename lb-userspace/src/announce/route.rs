//! Routed mode (`--announce route`): the VIPs as /32 routes in a kernel routing table that
//! the node's BGP daemon (BIRD, FRR) exports; the pure announce/withdraw decision, and the
//! netlink requests that add and remove the routes (through `net::netlink`).
//!
//! The route is `VIP/32 dev IFACE scope link proto xvip table N`, a plain unicast route:
//! BIRD's `protocol kernel { learn; }` and FRR's `redistribute table N` import unicast
//! routes (BIRD ignores `local` routes altogether, and a blackhole/unreachable route is
//! exported but tells every reader of the table, the node's own BGP daemon included, that
//! the VIP is dropped here). Table N is consulted by no `ip rule`, so it changes nothing in
//! the node's own forwarding: packets to the VIP are taken by the XDP program before any
//! route lookup, and the node's own processes reach the VIP through the `connect4` hook.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};
use netlink_sys::Socket;

use crate::net::netlink::{ack, send, socket};

/// How long a stopping daemon keeps forwarding after withdrawing its routes: the BGP
/// daemons' withdrawal and the router's ECMP update take a few hundred milliseconds.
pub const WITHDRAW_GRACE: Duration = Duration::from_secs(2);
/// `proto` number of xvip's routes (`ip route show proto 249`), so `xvip detach` and a
/// restart find them without knowing the VIPs, and BGP filters can match them.
pub const RTPROT_XVIP: u8 = 249;

/// Why the routes could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The netlink socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The kernel refused a request.
    #[error("{op} route {vip}/{} table {table}: {source}", prefix_len(*vip))]
    Refused {
        op: &'static str,
        vip: IpAddr,
        table: u32,
        #[source]
        source: std::io::Error,
    },
    /// An answer that does not parse.
    #[error("netlink answer: {0}")]
    Decode(String),
}

/// What the decision looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInput {
    /// The XDP program is attached (it takes the VIP's packets).
    pub attached: bool,
    /// Backends healthy with a weight above 0 (a backend failing open does not count).
    pub healthy_backends: usize,
    /// The daemon is stopping (SIGTERM, SIGINT).
    pub stopping: bool,
}

/// Why the route is withdrawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawn {
    /// The XDP program is not attached.
    NotAttached,
    /// No backend is healthy: the router should send clients to a node that can serve.
    NoHealthyBackend,
    /// The daemon is stopping.
    Stopping,
}

impl Withdrawn {
    /// The reason as shown by `xvip status` and logged.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAttached => "not attached",
            Self::NoHealthyBackend => "no healthy backend",
            Self::Stopping => "stopping",
        }
    }
}

/// Announce or withdraw: announce only while attached, not stopping and with a healthy
/// backend. The fail-open rule: a node whose backends are all down withdraws, although its
/// data path fails open to every reachable backend; with ECMP another node that still sees
/// a healthy master takes its clients. When every node sees every master down, every node
/// withdraws and the VIP is unreachable, which is what clients would get from a fail-open
/// table towards dead masters, minus the timeouts.
pub fn decide(i: RouteInput) -> Result<(), Withdrawn> {
    if i.stopping {
        Err(Withdrawn::Stopping)
    } else if !i.attached {
        Err(Withdrawn::NotAttached)
    } else if i.healthy_backends == 0 {
        Err(Withdrawn::NoHealthyBackend)
    } else {
        Ok(())
    }
}

/// Routed mode in the status document and metrics.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RouteStatus {
    /// The VIP routes are in the table.
    pub announced: bool,
    pub table: u32,
    /// Why not, while withdrawn (a [`Withdrawn::reason`] or the kernel's refusal).
    pub reason: Option<String>,
    /// Announcements and withdrawals so far.
    pub changes: u64,
}

impl RouteStatus {
    /// The line `xvip status` prints.
    pub fn line(&self) -> String {
        match (&self.reason, self.announced) {
            (_, true) => format!(
                "route: ANNOUNCED in table {} ({} changes)",
                self.table, self.changes
            ),
            (r, false) => format!(
                "route: WITHDRAWN from table {}: {} ({} changes)",
                self.table,
                r.as_deref().unwrap_or("not yet decided"),
                self.changes
            ),
        }
    }
}

/// The routes of one daemon: its VIPs (and the Service addresses, `--services`: IPv6 ones
/// as /128s) on its interface in its table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub vips: Vec<IpAddr>,
    pub ifindex: u32,
    pub table: u32,
}

/// 32 for an IPv4 address, 128 for an IPv6 one: a host route.
pub fn prefix_len(a: IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// The route message for `vip`: `vip/32 dev ifindex scope link proto xvip table N` (/128
/// for an IPv6 address).
pub fn route_message(vip: IpAddr, ifindex: u32, table: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: if vip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        },
        destination_prefix_length: prefix_len(vip),
        // Tables above 255 are only in the attribute; the header then says "unspec".
        table: u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC),
        protocol: RouteProtocol::Other(RTPROT_XVIP),
        scope: RouteScope::Link,
        kind: RouteType::Unicast,
        ..Default::default()
    };
    m.attributes = vec![
        RouteAttribute::Destination(match vip {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }),
        RouteAttribute::Oif(ifindex),
        RouteAttribute::Table(table),
    ];
    m
}

/// Puts (or replaces) every VIP's route.
///
/// # Errors
/// [`RouteError`] for the first VIP the kernel refused.
pub fn announce(spec: &RouteSpec) -> Result<(), RouteError> {
    let s = socket()?;
    for vip in &spec.vips {
        let m = route_message(*vip, spec.ifindex, spec.table);
        send(
            &s,
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        ack(&s).map_err(|source| RouteError::Refused {
            op: "add",
            vip: *vip,
            table: spec.table,
            source,
        })?;
    }
    Ok(())
}

/// Removes every VIP's route (a route already gone is not an error).
///
/// # Errors
/// [`RouteError`] for the first VIP whose route the kernel did not remove.
pub fn withdraw(spec: &RouteSpec) -> Result<(), RouteError> {
    let s = socket()?;
    for vip in &spec.vips {
        delete(&s, route_message(*vip, spec.ifindex, spec.table))?;
    }
    Ok(())
}

fn delete(s: &Socket, m: RouteMessage) -> Result<(), RouteError> {
    let (vip, table) = (destination(&m), table_of(&m));
    send(
        s,
        RouteNetlinkMessage::DelRoute(m),
        NLM_F_REQUEST | NLM_F_ACK,
    )?;
    match ack(s) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(source) => Err(RouteError::Refused {
            op: "delete",
            vip: vip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            table,
            source,
        }),
    }
}

fn destination(m: &RouteMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(m.header.table.into())
}

fn oif_of(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// xvip's routes (`proto xvip`) on `ifindex`, in any table, as (VIP, table): the IPv4
/// /32s, then the IPv6 /128s (a kernel without IPv6 has none: its refusal is no error).
///
/// # Errors
/// The IPv4 dump failed.
pub fn ours(ifindex: u32) -> Result<Vec<(IpAddr, u32)>, RouteError> {
    let mut found = ours_of(ifindex, AddressFamily::Inet)?;
    if let Ok(v6) = ours_of(ifindex, AddressFamily::Inet6) {
        found.extend(v6);
    }
    Ok(found)
}

fn ours_of(ifindex: u32, family: AddressFamily) -> Result<Vec<(IpAddr, u32)>, RouteError> {
    let s = socket()?;
    let mut req = RouteMessage::default();
    req.header.address_family = family;
    send(
        &s,
        RouteNetlinkMessage::GetRoute(req),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // Bounded: a dump of 4,096 reads is far beyond any route table xvip shares a node with.
    for _ in 0..4096 {
        let n = s.recv(&mut &mut buf[..], 0).map_err(RouteError::Socket)?;
        let mut off = 0;
        while off < n {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..n])
                .map_err(|e| RouteError::Decode(e.to_string()))?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(RouteError::Decode(format!("dump refused: {e}")));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r))
                    if r.header.protocol == RouteProtocol::Other(RTPROT_XVIP)
                        && oif_of(&r) == Some(ifindex) =>
                {
                    if let Some(vip) = destination(&r)
                        && r.header.destination_prefix_length == prefix_len(vip)
                    {
                        found.push((vip, table_of(&r)));
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
    Err(RouteError::Decode("route dump did not end".into()))
}

/// Removes every route xvip put on `ifindex` (`xvip detach`, and a start that finds a
/// crashed daemon's routes), returning how many.
///
/// # Errors
/// The dump or a removal failed.
pub fn withdraw_all(ifindex: u32) -> Result<usize, RouteError> {
    let routes = ours(ifindex)?;
    let s = socket()?;
    for (vip, table) in &routes {
        delete(&s, route_message(*vip, ifindex, *table))?;
    }
    Ok(routes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(attached: bool, healthy_backends: usize, stopping: bool) -> RouteInput {
        RouteInput {
            attached,
            healthy_backends,
            stopping,
        }
    }

    #[test]
    fn a_node_announces_only_while_attached_with_a_healthy_backend() {
        assert_eq!(decide(input(true, 1, false)), Ok(()));
        assert_eq!(decide(input(true, 3, false)), Ok(()));
    }

    #[test]
    fn a_node_whose_backends_are_all_down_withdraws_although_its_table_fails_open() {
        assert_eq!(
            decide(input(true, 0, false)),
            Err(Withdrawn::NoHealthyBackend)
        );
        assert_eq!(Withdrawn::NoHealthyBackend.reason(), "no healthy backend");
    }

    #[test]
    fn stopping_withdraws_first_whatever_else_holds() {
        for (attached, healthy) in [(true, 1), (false, 0), (true, 0), (false, 2)] {
            assert_eq!(
                decide(input(attached, healthy, true)),
                Err(Withdrawn::Stopping)
            );
        }
    }

    #[test]
    fn a_detached_node_withdraws_even_with_healthy_backends() {
        assert_eq!(decide(input(false, 2, false)), Err(Withdrawn::NotAttached));
    }

    #[test]
    fn status_names_the_table_and_why_the_route_is_withdrawn() {
        let mut r = RouteStatus {
            announced: true,
            table: 200,
            reason: None,
            changes: 1,
        };
        assert_eq!(r.line(), "route: ANNOUNCED in table 200 (1 changes)");
        r.announced = false;
        r.reason = Some(Withdrawn::NoHealthyBackend.reason().into());
        assert!(
            r.line()
                .contains("WITHDRAWN from table 200: no healthy backend")
        );
    }

    #[test]
    fn the_route_is_a_unicast_link_route_of_xvip_in_the_table() {
        let m = route_message(Ipv4Addr::new(192, 0, 2, 100).into(), 7, 200);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.destination_prefix_length, 32);
        assert_eq!(m.header.protocol, RouteProtocol::Other(RTPROT_XVIP));
        assert_eq!(m.header.table, 200);
        assert_eq!(table_of(&m), 200);
        assert_eq!(oif_of(&m), Some(7));
        assert_eq!(destination(&m), Some(Ipv4Addr::new(192, 0, 2, 100).into()));
        // A table above 255 lives in the attribute only.
        let m = route_message(Ipv4Addr::new(192, 0, 2, 100).into(), 7, 1000);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(table_of(&m), 1000);
    }

    #[test]
    fn an_ipv6_service_address_is_a_host_route_of_its_family() {
        let a: IpAddr = "2001:db8::a0".parse().unwrap();
        let m = route_message(a, 7, 200);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.destination_prefix_length, 128);
        assert_eq!(m.header.protocol, RouteProtocol::Other(RTPROT_XVIP));
        assert_eq!(destination(&m), Some(a));
        assert_eq!(prefix_len(Ipv4Addr::LOCALHOST.into()), 32);
    }
}
