//! With `--vrrp-vrid`: which nodes of the group reach this one, heard while `vrrp` listens
//! for adverts (nothing is sent). Two sources: the VRRP adverts of our VRID (only the master
//! sends them: a silent peer may be a backup) and, with `--sync-key-file`, the conntrack
//! sync heartbeats every node sends each second (UDP to 224.0.0.18, or to each peer),
//! authenticated with the key. The expected members are the `--vrrp-peer`s; without them
//! the nodes heard are listed.
//!
//! Found this way: a firewall, `nftables` rule or multicast-filtering switch that drops one
//! peer's traffic (that peer heard by nobody: both become master), and two masters at once.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use super::Finding;
use crate::config::sync::SyncSettings;
use crate::net::iface::Interface;
use crate::wire::sync as wire;

const CHECK: &str = "group-peers";

/// At most this many distinct senders are remembered (the sync receiver's peer bound).
const MAX_HEARD: usize = crate::sync::peer::MAX_PEERS;

/// What was heard in the listening time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// Sources of VRRP adverts of our VRID (either family).
    pub vrrp: BTreeSet<IpAddr>,
    /// Senders of authenticated sync datagrams; `None`: sync is off or could not be heard.
    pub sync: Option<BTreeSet<Ipv4Addr>>,
}

/// Why the sync port is not listened on (a finding of its own).
pub enum SyncListen {
    /// Listened: the senders heard.
    Heard(BTreeSet<Ipv4Addr>),
    /// Not listened, with the reason shown.
    Skipped(String),
}

/// Listens on the sync port for `wait`: joined to the group on `iface`, as the daemon's
/// socket is (both share the port with `SO_REUSEADDR`: multicast reaches both). With unicast
/// peers and the port held by an `xvip run` on this node, nothing is listened (a unicast
/// datagram would reach only one of the two sockets: the daemon's must not lose any).
pub async fn listen_sync(iface: &Interface, s: &SyncSettings, wait: Duration) -> SyncListen {
    let addr = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, s.port));
    let open = |reuse: bool| -> std::io::Result<socket2::Socket> {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        sock.set_reuse_address(reuse)?;
        sock.bind_device(Some(iface.name.as_bytes()))?;
        sock.bind(&addr.into())?;
        Ok(sock)
    };
    let in_use = matches!(open(false), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse);
    if in_use && !s.peers.is_empty() {
        return SyncListen::Skipped(format!(
            "UDP {} is held by an xvip on this node (unicast peers: listening would take its datagrams); `xvip status` shows the sync peers it hears",
            s.port
        ));
    }
    let sock = match open(true).and_then(|sock| {
        sock.join_multicast_v4(&crate::sync::SYNC_GROUP, &iface.ipv4)?;
        sock.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(sock.into())
    }) {
        Ok(sock) => sock,
        Err(e) => return SyncListen::Skipped(format!("cannot listen on UDP {}: {e}", s.port)),
    };
    let end = Instant::now() + wait;
    let mut heard = BTreeSet::new();
    let mut buf = [0u8; wire::MAX_DATAGRAM + 1];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Ok((n, from))) = tokio::time::timeout(left, sock.recv_from(&mut buf)).await else {
            break;
        };
        let IpAddr::V4(from) = from.ip() else {
            continue;
        };
        // Authenticated, signed by the node it comes from, and of now (not a replay).
        if let Ok(m) = wire::decode(&s.key, &buf[..n])
            && m.header.sender == from
            && m.header.fresh(wire::wall_ms())
            && from != iface.ipv4
            && heard.len() < MAX_HEARD
        {
            heard.insert(from);
        }
    }
    SyncListen::Heard(heard)
}

fn list<T: ToString>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Judges what was heard in `listened` against the configured peers `expected` (without
/// this node's addresses).
pub fn judge(expected: &[IpAddr], heard: &Heard, vrid: u8, listened: Duration) -> Vec<Finding> {
    let sync = heard.sync.as_ref();
    let any: BTreeSet<IpAddr> = heard
        .vrrp
        .iter()
        .copied()
        .chain(sync.into_iter().flatten().map(|&a| IpAddr::V4(a)))
        .collect();
    let mut out = Vec::new();
    // Two routers advertising at once both believe they are master: they do not hear each
    // other (the adverts' loss is between them, not necessarily here).
    if heard.vrrp.len() > 1 {
        out.push(Finding::fail(
            CHECK,
            format!(
                "{} all advertise VRID {vrid} (each is master): they do not hear each other's adverts",
                list(&heard.vrrp)
            ),
            "let IP protocol 112 to 224.0.0.18 / ff02::12 (or to each --vrrp-peer) through between them: firewalls, nftables, the switch's IGMP snooping",
        ));
    }
    if expected.is_empty() {
        if let Some(sync) = sync {
            out.push(if sync.is_empty() {
                Finding::warn(
                    CHECK,
                    format!(
                        "no sync heartbeat from another node in {listened:?} (every running node sends one a second to 224.0.0.18)"
                    ),
                    "start xvip on the other nodes, or let UDP to 224.0.0.18 through between them",
                )
            } else {
                Finding::ok(CHECK, format!("sync heartbeats heard from {}", list(sync)))
            });
        }
        return out;
    }
    let missing: Vec<IpAddr> = expected
        .iter()
        .filter(|p| !any.contains(p))
        .copied()
        .collect();
    let present: Vec<IpAddr> = expected
        .iter()
        .filter(|p| any.contains(p))
        .copied()
        .collect();
    let fix = |p: &IpAddr| {
        format!(
            "let IP protocol 112{} from {p} reach this node (firewall, nftables, the switch's IGMP snooping) and check xvip runs there",
            if sync.is_some() { " and UDP sync" } else { "" }
        )
    };
    if present.is_empty() {
        out.push(Finding::warn(
            CHECK,
            format!(
                "nothing from any --vrrp-peer ({}) in {listened:?}",
                list(expected)
            ),
            "start xvip on the peers; if it runs there, let their VRRP and sync traffic reach this node",
        ));
        return out;
    }
    match sync {
        // Every running node sends heartbeats: a peer not heard while others are is cut off.
        Some(_) => {
            for p in &missing {
                out.push(Finding::fail(
                    CHECK,
                    format!(
                        "nothing from {p} in {listened:?} while {} {} heard: its VRRP and sync traffic does not reach this node",
                        list(&present),
                        if present.len() == 1 { "was" } else { "were" }
                    ),
                    fix(p),
                ));
            }
        }
        // Only the master advertises: a silent peer may be a backup.
        None if !missing.is_empty() => out.push(Finding::ok(
            CHECK,
            format!(
                "heard {}; {} silent (a backup sends no adverts: with --sync-key-file every node is heard)",
                list(&present),
                list(&missing)
            ),
        )),
        None => {}
    }
    if missing.is_empty() || sync.is_none() && out.is_empty() {
        out.push(Finding::ok(
            CHECK,
            format!("heard every --vrrp-peer: {}", list(&present)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn heard(vrrp: &[&str], sync: Option<&[&str]>) -> Heard {
        Heard {
            vrrp: ips(vrrp).into_iter().collect(),
            sync: sync.map(|s| s.iter().map(|a| a.parse().unwrap()).collect()),
        }
    }

    const T: Duration = Duration::from_secs(3);
    const PEERS: &[&str] = &["192.0.2.11", "192.0.2.12"];

    #[test]
    fn with_sync_a_peer_not_heard_while_another_is_fails_naming_it() {
        let f = judge(
            &ips(PEERS),
            &heard(&["192.0.2.11"], Some(&["192.0.2.11"])),
            51,
            T,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].line(),
            "fail group-peers: nothing from 192.0.2.12 in 3s while 192.0.2.11 was heard: its VRRP and sync traffic does not reach this node; fix: let IP protocol 112 and UDP sync from 192.0.2.12 reach this node (firewall, nftables, the switch's IGMP snooping) and check xvip runs there"
        );
        let all = judge(
            &ips(PEERS),
            &heard(&[], Some(&["192.0.2.11", "192.0.2.12"])),
            51,
            T,
        );
        assert_eq!(
            all[0].line(),
            "ok   group-peers: heard every --vrrp-peer: 192.0.2.11, 192.0.2.12"
        );
    }

    #[test]
    fn without_sync_a_silent_peer_may_be_a_backup_but_two_masters_fail() {
        let f = judge(&ips(PEERS), &heard(&["192.0.2.11"], None), 51, T);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Ok);
        assert!(f[0].seen.starts_with("heard 192.0.2.11; 192.0.2.12 silent"));
        let two = judge(
            &ips(PEERS),
            &heard(&["192.0.2.11", "192.0.2.12"], None),
            51,
            T,
        );
        assert_eq!(
            two[0].seen,
            "192.0.2.11, 192.0.2.12 all advertise VRID 51 (each is master): they do not hear each other's adverts"
        );
        assert_eq!(two[0].level, Level::Fail);
    }

    #[test]
    fn nothing_heard_warns_and_without_peers_the_heard_nodes_are_listed() {
        let f = judge(&ips(PEERS), &heard(&[], Some(&[])), 51, T);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Warn);
        assert_eq!(
            judge(&[], &heard(&[], Some(&["192.0.2.13"])), 51, T)[0].seen,
            "sync heartbeats heard from 192.0.2.13"
        );
        assert_eq!(
            judge(&[], &heard(&[], Some(&[])), 51, T)[0].level,
            Level::Warn
        );
        assert!(judge(&[], &heard(&["192.0.2.13"], None), 51, T).is_empty());
    }
}
