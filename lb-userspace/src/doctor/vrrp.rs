//! With `--vrrp-vrid`: the VRRP advertisements on the first interface for our VRID (of the
//! IPv4 instance, and of the IPv6 one with IPv6 VIPs), heard for a few seconds through the
//! election's own raw sockets and parser (nothing is sent).
//! Another router on our VRID that speaks another version, uses another password, is not one
//! of the configured peers or announces other addresses breaks the election: both sides
//! become master, or each ignores the other.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::Finding;
use crate::config::Settings;
use crate::net::iface::Interface;
use crate::{
    announce::vrrp::VrrpSocket,
    config::vrrp::VrrpSettings,
    wire::vrrp::{self as packet, Advert, Version},
};

/// How long the doctor listens: three advertisement intervals, at least 3 s, at most 10 s.
pub fn listen_time(advert_interval: Duration) -> Duration {
    (advert_interval * 3).clamp(Duration::from_secs(3), Duration::from_secs(10))
}

const CHECK: &str = "vrrp-adverts";

/// Most routers told apart in one listening (VRRP's own limit on a segment is the 255
/// VRIDs, each normally with a handful of routers).
const MAX_ROUTERS: usize = 64;

/// Listens for the adverts of our VRID, of the IPv4 instance (224.0.0.18) and, with IPv6
/// VIPs, the IPv6 one (ff02::12, from the link-local address) at the same time, and judges
/// each router heard.
pub async fn checks(s: &Settings, locals: &[IpAddr]) -> Vec<Finding> {
    let Some(v) = &s.vrrp else {
        return Vec::new();
    };
    let Ok(iface) = Interface::lookup(&s.interface) else {
        return Vec::new(); // the node checks have said so
    };
    let wait = listen_time(v.advert_interval);
    let v4 = async {
        if s.vips.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let vips: Vec<IpAddr> = s.vips.iter().map(|x| IpAddr::V4(x.addr)).collect();
        listen(
            &iface,
            IpAddr::V4(iface.ipv4),
            &iface.name,
            v,
            &vips,
            locals,
            wait,
        )
        .await
    };
    let v6 = async {
        let ll = crate::announce::ndp::link_local(&crate::announce::ndp::interface_addresses(
            &iface.name,
        ));
        // Without a link-local address the `ipv6` check has failed already.
        let (false, Some(ll)) = (s.vips6.is_empty(), ll) else {
            return (Vec::new(), Vec::new());
        };
        let vips: Vec<IpAddr> = s.vips6.iter().map(|x| IpAddr::V6(x.addr)).collect();
        let name = format!("{} (IPv6)", iface.name);
        listen(&iface, IpAddr::V6(ll), &name, v, &vips, locals, wait).await
    };
    let sync = async {
        match &s.sync {
            Some(sync) => Some(super::peers::listen_sync(&iface, sync, wait).await),
            None => None,
        }
    };
    let ((mut out, mut heard), (six, heard6), sync) = tokio::join!(v4, v6, sync);
    out.extend(six);
    heard.extend(heard6);
    let mut heard = super::peers::Heard {
        vrrp: heard.into_iter().collect(),
        sync: None,
    };
    match sync {
        Some(super::peers::SyncListen::Heard(from)) => heard.sync = Some(from),
        Some(super::peers::SyncListen::Skipped(why)) => out.push(Finding::warn(
            "group-peers",
            format!("sync heartbeats not heard: {why}"),
            "",
        )),
        None => {}
    }
    let expected: Vec<IpAddr> = v
        .peers
        .iter()
        .filter(|p| !locals.contains(p))
        .copied()
        .collect();
    out.extend(super::peers::judge(&expected, &heard, v.vrid, wait));
    out
}

/// One instance's listening: the socket the election uses, sending from `src` (nothing is
/// sent), for `wait`. Also returns the sources heard on our VRID (for `peers`).
async fn listen(
    iface: &Interface,
    src: IpAddr,
    shown: &str,
    v: &VrrpSettings,
    vips: &[IpAddr],
    locals: &[IpAddr],
    wait: Duration,
) -> (Vec<Finding>, Vec<IpAddr>) {
    let sock = match VrrpSocket::open(&iface.name, iface.index, src) {
        Ok(sock) => sock,
        Err(e) => {
            let f = Finding::warn(
                CHECK,
                format!("{shown}: cannot listen: {e}"),
                "run as root (CAP_NET_RAW)",
            );
            return (vec![f], Vec::new());
        }
    };
    let end = Instant::now() + wait;
    // The last advert of each source, at most `MAX_ROUTERS` sources (a flood of spoofed
    // sources costs the listening time, not memory).
    let mut heard: BTreeMap<IpAddr, Advert> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Ok(n)) = tokio::time::timeout(left, sock.recv(&mut buf)).await else {
            break;
        };
        if let Ok(r) = packet::parse_ip(&buf[..n])
            && r.advert.vrid == v.vrid
            && r.src.is_ipv4() == src.is_ipv4()
            && !locals.contains(&r.src)
            && (heard.len() < MAX_ROUTERS || heard.contains_key(&r.src))
        {
            heard.insert(r.src, r.advert);
        }
    }
    let heard: Vec<(IpAddr, Advert)> = heard.into_iter().collect();
    let from = heard
        .iter()
        .filter(|(src, a)| of_group(v, vips, *src, a))
        .map(|(src, _)| *src)
        .collect();
    (judge(shown, v, vips, &heard, wait), from)
}

/// Whether `a` from `src` is an advert of our group (what [`judge`] calls ok).
fn of_group(ours: &VrrpSettings, vips: &[IpAddr], src: IpAddr, a: &Advert) -> bool {
    let mut theirs = a.addrs.clone();
    theirs.sort();
    let mut mine = vips.to_vec();
    mine.sort();
    a.version == ours.version
        && (a.version != Version::V2 || a.auth.matches(&ours.auth))
        && (ours.peers.is_empty() || ours.peers.contains(&src))
        && theirs == mine
}

/// One finding per router heard on our VRID (its last advert), or one saying none was.
pub fn judge(
    iface: &str,
    ours: &VrrpSettings,
    vips: &[IpAddr],
    heard: &[(IpAddr, Advert)],
    listened: Duration,
) -> Vec<Finding> {
    let vrid = ours.vrid;
    let last: BTreeMap<IpAddr, &Advert> = heard.iter().map(|(src, a)| (*src, a)).collect();
    if last.is_empty() {
        return vec![Finding::ok(
            CHECK,
            format!("no other router advertises VRID {vrid} on {iface} (listened {listened:?})"),
        )];
    }
    let same_vrid = "or give this group a --vrrp-vrid no other router on the segment uses";
    last.into_iter()
        .map(|(src, a)| {
            if a.version != ours.version {
                return Finding::fail(
                    CHECK,
                    format!(
                        "{src} advertises VRID {vrid} in VRRPv{}, this node speaks VRRPv{}",
                        a.version.number(),
                        ours.version.number()
                    ),
                    format!(
                        "the same --vrrp-version on every router of the group (keepalived: vrrp_version), {same_vrid}"
                    ),
                );
            }
            if a.version == Version::V2 && !a.auth.matches(&ours.auth) {
                return Finding::fail(
                    CHECK,
                    format!(
                        "{src} advertises VRID {vrid} with another authentication (type {}, or another password)",
                        a.auth.kind
                    ),
                    format!(
                        "the same --vrrp-auth-pass as the group's (keepalived: auth_pass), {same_vrid}"
                    ),
                );
            }
            if !ours.peers.is_empty() && !ours.peers.contains(&src) {
                return Finding::fail(
                    CHECK,
                    format!("{src} advertises VRID {vrid} but is not a --vrrp-peer"),
                    format!("add it with --vrrp-peer if it belongs to the group, {same_vrid}"),
                );
            }
            let mut theirs = a.addrs.clone();
            theirs.sort();
            let mut mine = vips.to_vec();
            mine.sort();
            if theirs != mine {
                let list = |v: &[IpAddr]| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Finding::fail(
                    CHECK,
                    format!(
                        "{src} advertises VRID {vrid} for {}, not {}: another VRRP group uses our VRID",
                        list(&theirs),
                        list(&mine)
                    ),
                    format!("the same VIPs on every router of the group, {same_vrid}"),
                );
            }
            Finding::ok(
                CHECK,
                format!(
                    "{src} (priority {}) is a router of this group",
                    a.priority
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;
    use crate::wire::vrrp::Auth;

    fn ours(version: Version, auth: Auth, peers: &[&str]) -> VrrpSettings {
        VrrpSettings {
            vrid: 51,
            priority: 100,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
            health_penalty: 50,
            version,
            auth,
            track_interfaces: Vec::new(),
            notify_exec: None,
            notify_fifo: None,
            track_ip: None,
            track_ip_weight: 50,
            track_ip_fall: 3,
        }
    }

    fn advert(version: Version, auth: Auth, addrs: &[&str]) -> Advert {
        Advert {
            version,
            vrid: 51,
            priority: 150,
            max_adver_int_cs: 100,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            auth,
        }
    }

    const VIP: &str = "192.0.2.100";

    fn vips() -> Vec<IpAddr> {
        vec![VIP.parse().unwrap()]
    }

    fn one(ours: &VrrpSettings, a: Advert) -> Finding {
        let mut f = judge(
            "eth0",
            ours,
            &vips(),
            &[("192.0.2.11".parse().unwrap(), a)],
            Duration::from_secs(3),
        );
        assert_eq!(f.len(), 1);
        f.remove(0)
    }

    #[test]
    fn a_router_of_another_version_fails() {
        let f = one(
            &ours(Version::V3, Auth::NONE, &[]),
            advert(Version::V2, Auth::NONE, &[VIP]),
        );
        assert_eq!(
            f.line(),
            "fail vrrp-adverts: 192.0.2.11 advertises VRID 51 in VRRPv2, this node speaks VRRPv3; fix: the same --vrrp-version on every router of the group (keepalived: vrrp_version), or give this group a --vrrp-vrid no other router on the segment uses"
        );
    }

    #[test]
    fn another_password_fails_without_showing_it() {
        let f = one(
            &ours(Version::V2, Auth::pass(b"secret"), &[]),
            advert(Version::V2, Auth::pass(b"other"), &[VIP]),
        );
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.seen.contains("another authentication (type 1"),
            "{}",
            f.seen
        );
        assert!(!f.line().contains("secret") && !f.line().contains("other\""));
        let same = one(
            &ours(Version::V2, Auth::pass(b"secret"), &[]),
            advert(Version::V2, Auth::pass(b"secret"), &[VIP]),
        );
        assert_eq!(same.level, Level::Ok);
    }

    #[test]
    fn a_router_outside_the_peers_or_for_other_addresses_fails() {
        let f = one(
            &ours(Version::V3, Auth::NONE, &["192.0.2.12"]),
            advert(Version::V3, Auth::NONE, &[VIP]),
        );
        assert!(f.seen.ends_with("is not a --vrrp-peer"), "{}", f.seen);
        let f = one(
            &ours(Version::V3, Auth::NONE, &[]),
            advert(Version::V3, Auth::NONE, &["198.51.100.1"]),
        );
        assert_eq!(
            f.seen,
            "192.0.2.11 advertises VRID 51 for 198.51.100.1, not 192.0.2.100: another VRRP group uses our VRID"
        );
        let f = one(
            &ours(Version::V3, Auth::NONE, &["192.0.2.11"]),
            advert(Version::V3, Auth::NONE, &[VIP]),
        );
        assert_eq!(
            f.line(),
            "ok   vrrp-adverts: 192.0.2.11 (priority 150) is a router of this group"
        );
    }

    #[test]
    fn silence_is_ok_and_the_listening_time_follows_the_interval() {
        let f = judge(
            "eth0",
            &ours(Version::V3, Auth::NONE, &[]),
            &vips(),
            &[],
            Duration::from_secs(3),
        );
        assert_eq!(
            f[0].line(),
            "ok   vrrp-adverts: no other router advertises VRID 51 on eth0 (listened 3s)"
        );
        assert_eq!(
            listen_time(Duration::from_millis(100)),
            Duration::from_secs(3)
        );
        assert_eq!(listen_time(Duration::from_secs(2)), Duration::from_secs(6));
        assert_eq!(
            listen_time(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
    }
}
