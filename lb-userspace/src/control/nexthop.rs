//! Backends' next hops from the kernel's tables, for IPv4 and IPv6 alike: the route to the
//! backend (`RTM_GETROUTE`: output interface and gateway, policy routing honoured), then the
//! neighbour entry of the gateway or of the backend itself (`RTM_GETNEIGH`). When the kernel
//! has no usable entry, `RTM_NEWNEIGH` with `NTF_USE` makes it resolve the address (ARP or
//! NDP) exactly as if traffic were waiting for it: xvip sends no ARP requests of its own.
//!
//! Why the daemon and not `bpf_fib_lookup` in the data path: the XDP program's packets never
//! touch the neighbour table, so a lookup there finds no entry for a backend nobody else talks
//! to and can only pass the packet up (the kernel then resolves, but the flow's first packets
//! take the slow path); the daemon reads both tables once a second for every backend, asks
//! the kernel to resolve or refresh what is missing or stale, and the packet path keeps its
//! one `BACKENDS` read.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage,
        NeighbourState,
    },
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use netlink_sys::Socket;

/// Why a backend has no next hop.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NextHopError {
    /// The netlink socket failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// The kernel has no route (or refused the lookup).
    #[error("no route to {addr}: {reason}")]
    NoRoute { addr: IpAddr, reason: String },
    /// The route drops the traffic (unreachable, blackhole, prohibit, ...).
    #[error("the route to {addr} is of type {kind}")]
    NotUnicast { addr: IpAddr, kind: String },
}

/// Where the kernel sends traffic for one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// An address of this node.
    Local,
    /// Out of `ifindex`, to `gateway` or (`None`) to the address itself on the link.
    Unicast {
        ifindex: u32,
        gateway: Option<IpAddr>,
    },
}

/// A backend's next hop on the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Output interface.
    pub ifindex: u32,
    /// The address resolved on the link: the gateway, or the backend itself.
    pub neighbour: IpAddr,
    /// `neighbour` is a gateway, not the backend.
    pub via_gateway: bool,
    /// The neighbour's MAC, when the kernel has a usable entry.
    pub mac: Option<[u8; 6]>,
    /// The kernel's entry state (`"none"` when it has no entry).
    pub state: &'static str,
}

/// One backend's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// The backend is this node.
    Local,
    /// Reached through the link.
    Remote(NextHop),
}

/// The entry's MAC if the kernel would send with it: reachable, stale (still used, and
/// re-verified by the kernel on use), being re-verified, or static.
pub fn usable_mac(state: NeighbourState, lladdr: Option<&[u8]>) -> Option<[u8; 6]> {
    let valid = matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    let mac: [u8; 6] = lladdr?.try_into().ok()?;
    (valid && mac != [0; 6]).then_some(mac)
}

/// Whether to ask the kernel to (re)resolve: anything but a confirmed or static entry. A
/// stale entry is refreshed as traffic would refresh it (our packets bypass the neighbour
/// code), so a changed MAC is noticed within a reachable time.
pub fn needs_solicit(state: Option<NeighbourState>) -> bool {
    !matches!(
        state,
        Some(NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp)
    )
}

/// The name `ip neigh` uses for a state.
pub fn state_name(state: Option<NeighbourState>) -> &'static str {
    match state {
        None => "none",
        Some(NeighbourState::Incomplete) => "incomplete",
        Some(NeighbourState::Reachable) => "reachable",
        Some(NeighbourState::Stale) => "stale",
        Some(NeighbourState::Delay) => "delay",
        Some(NeighbourState::Probe) => "probe",
        Some(NeighbourState::Failed) => "failed",
        Some(NeighbourState::Noarp) => "noarp",
        Some(NeighbourState::Permanent) => "permanent",
        Some(_) => "other",
    }
}

fn ip_of_route(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Reads the kernel's answer to a route lookup for `addr`.
///
/// # Errors
/// A route that does not deliver (unreachable, blackhole, ...) or names no interface.
pub fn route_of(addr: IpAddr, m: &RouteMessage) -> Result<Route, NextHopError> {
    match m.header.kind {
        RouteType::Local => return Ok(Route::Local),
        RouteType::Unicast => {}
        other => {
            return Err(NextHopError::NotUnicast {
                addr,
                kind: format!("{other:?}").to_lowercase(),
            });
        }
    }
    let mut ifindex = None;
    let mut gateway = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(g) => gateway = ip_of_route(g),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            _ => {}
        }
    }
    match ifindex {
        Some(ifindex) => Ok(Route::Unicast { ifindex, gateway }),
        None => Err(NextHopError::NoRoute {
            addr,
            reason: "the route names no output interface".into(),
        }),
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn netlink(e: impl std::fmt::Display) -> NextHopError {
    NextHopError::Netlink(e.to_string())
}

/// The socket itself failed (opening, sending), worded as it always was.
fn socket_error(e: std::io::Error) -> NextHopError {
    netlink(format!("netlink socket: {e}"))
}

/// Reads answers to the request just sent: its first message, or `Ok(None)` for a bare ACK.
fn answer(s: &Socket) -> Result<Option<RouteNetlinkMessage>, std::io::Error> {
    crate::net::netlink::read_answer(s, |p| match p {
        NetlinkPayload::Error(e) => Some(crate::net::netlink::acked(&e).map(|()| None)),
        NetlinkPayload::InnerMessage(inner) => Some(Ok(Some(inner))),
        _ => None,
    })
}

/// A neighbour entry: its state and link-layer address.
pub type Neighbour = (NeighbourState, Option<Vec<u8>>);

/// The kernel's netlink tables, through one socket.
pub struct Kernel {
    socket: Socket,
}

impl Kernel {
    /// Opens the netlink socket.
    ///
    /// # Errors
    /// [`NextHopError::Netlink`].
    pub fn open() -> Result<Self, NextHopError> {
        Ok(Self {
            socket: crate::net::netlink::socket().map_err(socket_error)?,
        })
    }

    /// Where the kernel would send a packet to `addr` (as `ip route get ADDR`).
    ///
    /// # Errors
    /// No route, or one that does not deliver.
    pub fn route(&self, addr: IpAddr) -> Result<Route, NextHopError> {
        let mut req = RouteMessage::default();
        req.header.address_family = family(addr);
        req.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        req.attributes = vec![RouteAttribute::Destination(addr.into())];
        crate::net::netlink::send(
            &self.socket,
            RouteNetlinkMessage::GetRoute(req),
            NLM_F_REQUEST,
        )
        .map_err(socket_error)?;
        match answer(&self.socket) {
            Ok(Some(RouteNetlinkMessage::NewRoute(m))) => route_of(addr, &m),
            Ok(_) => Err(NextHopError::NoRoute {
                addr,
                reason: "no route in the answer".into(),
            }),
            Err(e) => Err(NextHopError::NoRoute {
                addr,
                reason: e.to_string(),
            }),
        }
    }

    /// The kernel's neighbour entry for `addr` on `ifindex`: its state and link-layer
    /// address, `None` when there is no entry.
    ///
    /// # Errors
    /// The lookup failed for another reason than a missing entry.
    pub fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>, NextHopError> {
        let msg = neighbour_message(ifindex, addr, NeighbourState::None, NeighbourFlags::empty());
        crate::net::netlink::send(
            &self.socket,
            RouteNetlinkMessage::GetNeighbour(msg),
            NLM_F_REQUEST,
        )
        .map_err(socket_error)?;
        match answer(&self.socket) {
            Ok(Some(RouteNetlinkMessage::NewNeighbour(m))) => {
                let ll = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) => Some(l.clone()),
                    _ => None,
                });
                Ok(Some((m.header.state, ll)))
            }
            Ok(_) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(netlink(format!("neighbour {addr}: {e}"))),
        }
    }

    /// Makes the kernel resolve (or re-verify) `addr` on `ifindex` as if traffic used the
    /// entry (`NTF_USE`): an ARP request or a neighbour solicitation from the kernel itself.
    ///
    /// # Errors
    /// The kernel refused.
    pub fn solicit(&self, ifindex: u32, addr: IpAddr) -> Result<(), NextHopError> {
        let msg = neighbour_message(ifindex, addr, NeighbourState::None, NeighbourFlags::Use);
        crate::net::netlink::send(
            &self.socket,
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        )
        .map_err(socket_error)?;
        answer(&self.socket)
            .map(|_| ())
            .map_err(|e| netlink(format!("resolving {addr}: {e}")))
    }

    /// `addr`'s next hop: route, then neighbour; asks the kernel to resolve a neighbour
    /// that is missing, failed or stale (the MAC of a stale entry is still returned).
    ///
    /// # Errors
    /// No route, or the tables could not be read.
    pub fn next_hop(&self, addr: IpAddr) -> Result<Hop, NextHopError> {
        let (ifindex, gateway) = match self.route(addr)? {
            Route::Local => return Ok(Hop::Local),
            Route::Unicast { ifindex, gateway } => (ifindex, gateway),
        };
        let neighbour = gateway.unwrap_or(addr);
        let entry = self.neighbour(ifindex, neighbour)?;
        let state = entry.as_ref().map(|(s, _)| *s);
        if needs_solicit(state)
            && let Err(e) = self.solicit(ifindex, neighbour)
        {
            log::debug!("{e}");
        }
        Ok(Hop::Remote(NextHop {
            ifindex,
            neighbour,
            via_gateway: gateway.is_some(),
            mac: entry.and_then(|(s, ll)| usable_mac(s, ll.as_deref())),
            state: state_name(state),
        }))
    }
}

fn neighbour_message(
    ifindex: u32,
    addr: IpAddr,
    state: NeighbourState,
    flags: NeighbourFlags,
) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header = NeighbourHeader {
        family: family(addr),
        ifindex,
        state,
        flags,
        ..Default::default()
    };
    m.attributes = vec![NeighbourAttribute::Destination(match addr {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    })];
    m
}

/// Every address's next hop, through one socket (the daemon's once-a-second round).
///
/// # Errors
/// The socket could not be opened; per address, as [`Kernel::next_hop`].
pub fn next_hops(
    addrs: impl IntoIterator<Item = IpAddr>,
) -> Result<Vec<Result<Hop, NextHopError>>, NextHopError> {
    let k = Kernel::open()?;
    Ok(addrs.into_iter().map(|a| k.next_hop(a)).collect())
}

/// The line that says why a backend is out of the table (status and a log line when it
/// changes), or `None` when its next hop is known.
pub fn unresolved_reason(
    hop: &Result<Hop, NextHopError>,
    ifname: impl Fn(u32) -> String,
) -> Option<String> {
    match hop {
        Ok(Hop::Local) => None,
        Ok(Hop::Remote(h)) if h.mac.is_some() => None,
        Ok(Hop::Remote(h)) => Some(format!(
            "{} {} on {} not resolved (neighbour state {})",
            if h.via_gateway {
                "gateway"
            } else {
                "neighbour"
            },
            h.neighbour,
            ifname(h.ifindex),
            h.state
        )),
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));

    fn answer(kind: RouteType, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.kind = kind;
        m.attributes = attrs;
        m
    }

    #[test]
    fn a_route_through_a_gateway_names_interface_and_gateway() {
        let gw = Ipv4Addr::new(192, 0, 2, 1);
        let m = answer(
            RouteType::Unicast,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(198, 51, 100, 11))),
                RouteAttribute::Gateway(RouteAddress::Inet(gw)),
                RouteAttribute::Oif(4),
            ],
        );
        assert_eq!(
            route_of(B, &m),
            Ok(Route::Unicast {
                ifindex: 4,
                gateway: Some(IpAddr::V4(gw))
            })
        );
    }

    #[test]
    fn an_on_link_route_has_no_gateway_and_a_v6_gateway_is_kept() {
        let m = answer(RouteType::Unicast, vec![RouteAttribute::Oif(2)]);
        assert_eq!(
            route_of(B, &m),
            Ok(Route::Unicast {
                ifindex: 2,
                gateway: None
            })
        );
        let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let m = answer(
            RouteType::Unicast,
            vec![
                RouteAttribute::Oif(3),
                RouteAttribute::Via(RouteVia::Inet6(ll)),
            ],
        );
        assert_eq!(
            route_of(B, &m),
            Ok(Route::Unicast {
                ifindex: 3,
                gateway: Some(IpAddr::V6(ll))
            })
        );
    }

    #[test]
    fn local_addresses_and_dropping_routes_are_told_apart() {
        assert_eq!(
            route_of(B, &answer(RouteType::Local, vec![])),
            Ok(Route::Local)
        );
        let e = route_of(
            B,
            &answer(RouteType::Unreachable, vec![RouteAttribute::Oif(1)]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the route to 198.51.100.11 is of type unreachable"
        );
        let e = route_of(B, &answer(RouteType::Unicast, vec![])).unwrap_err();
        assert!(e.to_string().contains("no output interface"), "{e}");
    }

    #[test]
    fn only_entries_the_kernel_would_send_with_give_a_mac() {
        let mac = [2, 0, 0, 0, 0, 1];
        for s in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            assert_eq!(usable_mac(s, Some(&mac)), Some(mac), "{s:?}");
        }
        for s in [
            NeighbourState::Incomplete,
            NeighbourState::Failed,
            NeighbourState::None,
        ] {
            assert_eq!(usable_mac(s, Some(&mac)), None, "{s:?}");
        }
        assert_eq!(usable_mac(NeighbourState::Reachable, None), None);
        assert_eq!(usable_mac(NeighbourState::Reachable, Some(&[0; 6])), None);
        assert_eq!(
            usable_mac(NeighbourState::Reachable, Some(&[1, 2, 3])),
            None
        );
    }

    #[test]
    fn missing_failed_and_stale_entries_are_resolved_again_confirmed_ones_are_not() {
        assert!(needs_solicit(None));
        assert!(needs_solicit(Some(NeighbourState::Failed)));
        assert!(needs_solicit(Some(NeighbourState::Stale)));
        assert!(needs_solicit(Some(NeighbourState::Incomplete)));
        assert!(!needs_solicit(Some(NeighbourState::Reachable)));
        assert!(!needs_solicit(Some(NeighbourState::Permanent)));
    }

    #[test]
    fn the_reason_names_the_gateway_its_interface_and_state() {
        let hop = Ok(Hop::Remote(NextHop {
            ifindex: 3,
            neighbour: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            via_gateway: true,
            mac: None,
            state: "failed",
        }));
        assert_eq!(
            unresolved_reason(&hop, |_| "eth1".into()).as_deref(),
            Some("gateway 192.0.2.1 on eth1 not resolved (neighbour state failed)")
        );
        assert_eq!(unresolved_reason(&Ok(Hop::Local), |_| String::new()), None);
    }
}
