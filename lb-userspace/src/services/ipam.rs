//! Address management for Services, pure: from the pools and every served Service (its
//! request and the addresses its status already holds) to one address set per Service.
//!
//! The plan is recomputed from the whole Service set on every change, in a fixed order,
//! so two nodes that see the same Services compute the same plan. The status is the
//! truth: a Service keeps the addresses its status names while they are still valid
//! (inside a pool of its namespace, of its families, what it requested, not taken by an
//! older Service it cannot share with); only a Service without valid ones is allocated,
//! oldest first, the first free address of the pools in their configured order.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::config::services::{PoolSpec, from_u128, to_u128};

/// An address family a Service asks for, in its `ipFamilies` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `a`.
    pub fn of(a: IpAddr) -> Self {
        if a.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

/// A port a Service exposes (for sharing an address).
pub type Port = (String, u16);

/// What one Service asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    /// `metadata.creationTimestamp` (RFC 3339: sorts as time): the older Service keeps a
    /// contested address.
    pub created: String,
    /// Families wanted, first the primary.
    pub families: Vec<Family>,
    /// Every family of `families` is needed (`SingleStack`, `RequireDualStack`); else at
    /// least one (`PreferDualStack`).
    pub all_families: bool,
    /// `spec.loadBalancerIP` or the `xvip.io/loadbalancer-ips` annotation.
    pub requested: Vec<IpAddr>,
    /// The `xvip.io/allow-shared-ip` key: Services of the same key with disjoint ports may
    /// share an address.
    pub sharing: Option<String>,
    pub ports: Vec<Port>,
    /// What `status.loadBalancer.ingress` names now.
    pub current: Vec<IpAddr>,
}

/// What a Service gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// These addresses (the status to write).
    Assigned(Vec<IpAddr>),
    /// No address, and why (an event).
    Refused(String),
}

/// Use of one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub name: String,
    /// Addresses in the pool (saturating).
    pub total: u128,
    /// Addresses held by at least one Service.
    pub used: u64,
}

#[derive(Clone, Debug)]
struct Holder<'a> {
    key: &'a str,
    sharing: Option<&'a str>,
    ports: &'a [Port],
}

/// Whether `r` may hold an address `holders` already hold.
fn compatible(holders: &[Holder<'_>], r: &Request) -> bool {
    holders.iter().all(|h| {
        h.key == r.key
            || (h.sharing.is_some()
                && h.sharing == r.sharing.as_deref()
                && !h.ports.iter().any(|p| r.ports.contains(p)))
    })
}

/// The pools a namespace may draw from.
fn pools_for<'p>(pools: &'p [PoolSpec], ns: &str) -> impl Iterator<Item = &'p PoolSpec> + 'p {
    let ns = ns.to_string();
    pools
        .iter()
        .filter(move |p| p.namespaces.is_empty() || p.namespaces.contains(&ns))
}

fn in_pools(pools: &[PoolSpec], ns: &str, a: IpAddr) -> bool {
    pools_for(pools, ns).any(|p| p.ranges.iter().any(|r| r.contains(a)))
}

/// The plan: every Service's outcome, by key.
pub fn plan(pools: &[PoolSpec], requests: &[Request]) -> BTreeMap<String, Outcome> {
    let mut order: Vec<&Request> = requests.iter().collect();
    order.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    let mut held: BTreeMap<IpAddr, Vec<Holder<'_>>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    // First what the statuses hold and may keep, oldest first.
    for r in &order {
        if r.current.is_empty() || !keeps(pools, r) {
            continue;
        }
        if r.current
            .iter()
            .all(|a| compatible(held.get(a).map(Vec::as_slice).unwrap_or_default(), r))
        {
            for a in &r.current {
                held.entry(*a).or_default().push(holder(r));
            }
            out.insert(r.key.clone(), Outcome::Assigned(r.current.clone()));
        }
    }
    // Then everything else, oldest first.
    for r in &order {
        if out.contains_key(&r.key) {
            continue;
        }
        let o = allocate(pools, r, &held);
        if let Outcome::Assigned(addrs) = &o {
            for a in addrs {
                held.entry(*a).or_default().push(holder(r));
            }
        }
        out.insert(r.key.clone(), o);
    }
    out
}

fn holder(r: &Request) -> Holder<'_> {
    Holder {
        key: &r.key,
        sharing: r.sharing.as_deref(),
        ports: &r.ports,
    }
}

/// Whether the addresses of `r`'s status are still what it would be given.
fn keeps(pools: &[PoolSpec], r: &Request) -> bool {
    let fams: BTreeSet<Family> = r.current.iter().map(|a| Family::of(*a)).collect();
    let one_each = fams.len() == r.current.len();
    let wanted = if r.requested.is_empty() {
        let complete = if r.all_families {
            r.families.iter().all(|f| fams.contains(f))
        } else {
            !fams.is_empty()
        };
        complete && fams.iter().all(|f| r.families.contains(f))
    } else {
        let mut a = r.current.clone();
        let mut b = r.requested.clone();
        a.sort();
        b.sort();
        a == b
    };
    one_each && wanted && r.current.iter().all(|a| in_pools(pools, &r.namespace, *a))
}

fn allocate(pools: &[PoolSpec], r: &Request, held: &BTreeMap<IpAddr, Vec<Holder<'_>>>) -> Outcome {
    let free_for = |a: &IpAddr| compatible(held.get(a).map(Vec::as_slice).unwrap_or_default(), r);
    if !r.requested.is_empty() {
        let fams: BTreeSet<Family> = r.requested.iter().map(|a| Family::of(*a)).collect();
        if fams.len() != r.requested.len() {
            return Outcome::Refused(format!(
                "requested addresses {:?}: at most one of each family",
                r.requested
            ));
        }
        for a in &r.requested {
            if !in_pools(pools, &r.namespace, *a) {
                return Outcome::Refused(format!(
                    "requested address {a} is in no pool for namespace {}",
                    r.namespace
                ));
            }
            if !free_for(a) {
                let by: Vec<&str> = held[a].iter().map(|h| h.key).collect();
                return Outcome::Refused(format!(
                    "requested address {a} is in use by {} (and not shareable)",
                    by.join(", ")
                ));
            }
        }
        return Outcome::Assigned(r.requested.clone());
    }
    let mut got = Vec::new();
    let mut missing = Vec::new();
    for f in &r.families {
        match first_free(pools, r, *f, held) {
            Some(a) => got.push(a),
            None => missing.push(*f),
        }
    }
    if got.is_empty() || (r.all_families && !missing.is_empty()) {
        let names: Vec<&str> = pools_for(pools, &r.namespace)
            .map(|p| p.name.as_str())
            .collect();
        return Outcome::Refused(format!(
            "no free {} address in the pools for namespace {} ({})",
            missing
                .iter()
                .map(|f| match f {
                    Family::V4 => "IPv4",
                    Family::V6 => "IPv6",
                })
                .collect::<Vec<_>>()
                .join("/"),
            r.namespace,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    Outcome::Assigned(got)
}

/// A sharing Service first joins an address its key already uses; else the first address
/// nobody holds. Steps: at most one per held address plus one per range.
fn first_free(
    pools: &[PoolSpec],
    r: &Request,
    f: Family,
    held: &BTreeMap<IpAddr, Vec<Holder<'_>>>,
) -> Option<IpAddr> {
    let v4 = f == Family::V4;
    let ranges = || {
        pools_for(pools, &r.namespace)
            .flat_map(|p| p.ranges.iter())
            .filter(move |x| x.first.is_ipv4() == v4)
    };
    if r.sharing.is_some() {
        for x in ranges() {
            for (a, hs) in held.range(x.first..=x.last) {
                if hs.iter().any(|h| h.sharing == r.sharing.as_deref()) && compatible(hs, r) {
                    return Some(*a);
                }
            }
        }
    }
    for x in ranges() {
        let mut n = to_u128(x.first);
        let last = to_u128(x.last);
        for a in held.range(x.first..=x.last).map(|(a, _)| to_u128(*a)) {
            if a != n {
                break;
            }
            if a == last {
                n = last;
                break;
            }
            n = a + 1;
        }
        let cand = from_u128(n, v4);
        if !held.contains_key(&cand) {
            return Some(cand);
        }
    }
    None
}

/// How much of each pool the plan uses.
pub fn usage(pools: &[PoolSpec], plan: &BTreeMap<String, Outcome>) -> Vec<PoolUsage> {
    let used: BTreeSet<IpAddr> = plan
        .values()
        .filter_map(|o| match o {
            Outcome::Assigned(a) => Some(a.iter().copied()),
            Outcome::Refused(_) => None,
        })
        .flatten()
        .collect();
    pools
        .iter()
        .map(|p| PoolUsage {
            name: p.name.clone(),
            total: p
                .ranges
                .iter()
                .fold(0u128, |t, r| t.saturating_add(r.len())),
            used: used
                .iter()
                .filter(|a| p.ranges.iter().any(|r| r.contains(**a)))
                .count() as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::services::AddrRange;

    fn pool(name: &str, ranges: &[&str], ns: &[&str]) -> PoolSpec {
        PoolSpec {
            name: name.into(),
            ranges: ranges
                .iter()
                .map(|r| AddrRange::parse(r).unwrap())
                .collect(),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn svc(key: &str, created: &str) -> Request {
        Request {
            key: key.into(),
            namespace: key.split('/').next().unwrap().into(),
            created: created.into(),
            families: vec![Family::V4],
            all_families: true,
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn got(p: &BTreeMap<String, Outcome>, key: &str) -> Vec<String> {
        match &p[key] {
            Outcome::Assigned(a) => a.iter().map(|a| a.to_string()).collect(),
            Outcome::Refused(why) => vec![format!("refused: {why}")],
        }
    }

    #[test]
    fn the_oldest_gets_the_first_free_address_and_a_full_pool_refuses() {
        let pools = [pool("a", &["192.0.2.200/31"], &[])];
        let reqs = [svc("ns/c", "3"), svc("ns/a", "1"), svc("ns/b", "2")];
        let p = plan(&pools, &reqs);
        assert_eq!(got(&p, "ns/a"), ["192.0.2.200"]);
        assert_eq!(got(&p, "ns/b"), ["192.0.2.201"]);
        let why = &got(&p, "ns/c")[0];
        assert!(why.contains("no free IPv4") && why.contains("(a)"), "{why}");
        let u = usage(&pools, &p);
        assert_eq!((u[0].total, u[0].used), (2, 2));
    }

    #[test]
    fn the_status_is_kept_and_a_gap_is_filled_first() {
        let pools = [pool("a", &["192.0.2.200-192.0.2.203"], &[])];
        let mut a = svc("ns/a", "1");
        a.current = vec![ip("192.0.2.202")];
        let reqs = [a, svc("ns/b", "2"), svc("ns/c", "3")];
        let p = plan(&pools, &reqs);
        assert_eq!(got(&p, "ns/a"), ["192.0.2.202"], "a restart re-reads");
        assert_eq!(got(&p, "ns/b"), ["192.0.2.200"]);
        assert_eq!(got(&p, "ns/c"), ["192.0.2.201"]);
    }

    #[test]
    fn a_contested_address_stays_with_the_older_service_and_the_other_moves() {
        // Two nodes allocated at once from different views: both statuses name .200.
        let pools = [pool("a", &["192.0.2.200/30"], &[])];
        let mut a = svc("ns/a", "1");
        a.current = vec![ip("192.0.2.200")];
        let mut b = svc("ns/b", "2");
        b.current = vec![ip("192.0.2.200")];
        let p = plan(&pools, &[b.clone(), a.clone()]);
        assert_eq!(got(&p, "ns/a"), ["192.0.2.200"]);
        assert_eq!(got(&p, "ns/b"), ["192.0.2.201"]);
        // Any order in, the same plan out.
        assert_eq!(p, plan(&pools, &[a, b]));
    }

    #[test]
    fn a_status_outside_the_pools_or_of_a_family_not_asked_is_replaced() {
        let pools = [pool("a", &["192.0.2.200/30", "2001:db8::100/126"], &[])];
        let mut a = svc("ns/a", "1");
        a.current = vec![ip("203.0.113.9")];
        let mut b = svc("ns/b", "2");
        b.current = vec![ip("2001:db8::100")];
        let p = plan(&pools, &[a, b]);
        assert_eq!(got(&p, "ns/a"), ["192.0.2.200"]);
        assert_eq!(got(&p, "ns/b"), ["192.0.2.201"]);
    }

    #[test]
    fn requested_addresses_inside_outside_and_taken() {
        let pools = [pool("a", &["192.0.2.200/29"], &[])];
        let mut a = svc("ns/a", "1");
        a.requested = vec![ip("192.0.2.205")];
        let mut b = svc("ns/b", "2");
        b.requested = vec![ip("198.51.100.1")];
        let mut c = svc("ns/c", "3");
        c.requested = vec![ip("192.0.2.205")];
        let d = svc("ns/d", "4");
        let p = plan(&pools, &[a, b, c, d]);
        assert_eq!(got(&p, "ns/a"), ["192.0.2.205"]);
        assert!(got(&p, "ns/b")[0].contains("198.51.100.1 is in no pool"));
        assert!(
            got(&p, "ns/c")[0].contains("in use by ns/a"),
            "{:?}",
            got(&p, "ns/c")
        );
        assert_eq!(got(&p, "ns/d"), ["192.0.2.200"]);
    }

    #[test]
    fn a_status_that_differs_from_the_request_follows_the_request() {
        let pools = [pool("a", &["192.0.2.200/29"], &[])];
        let mut a = svc("ns/a", "1");
        a.current = vec![ip("192.0.2.200")];
        a.requested = vec![ip("192.0.2.206")];
        assert_eq!(got(&plan(&pools, &[a]), "ns/a"), ["192.0.2.206"]);
    }

    #[test]
    fn sharing_needs_the_same_key_and_disjoint_ports() {
        let pools = [pool("a", &["192.0.2.200/30"], &[])];
        let share = |key: &str, created: &str, k: Option<&str>, port: u16| Request {
            sharing: k.map(String::from),
            ports: vec![("TCP".into(), port)],
            ..svc(key, created)
        };
        let reqs = [
            share("ns/web", "1", Some("k"), 80),
            share("ns/dns", "2", Some("k"), 53),
            share("ns/dup", "3", Some("k"), 80),
            share("ns/other", "4", Some("j"), 22),
            share("ns/plain", "5", None, 443),
        ];
        let p = plan(&pools, &reqs);
        assert_eq!(got(&p, "ns/web"), ["192.0.2.200"]);
        assert_eq!(got(&p, "ns/dns"), ["192.0.2.200"], "same key, other port");
        assert_eq!(got(&p, "ns/dup"), ["192.0.2.201"], "same port: its own");
        assert_eq!(got(&p, "ns/other"), ["192.0.2.202"], "another key");
        assert_eq!(got(&p, "ns/plain"), ["192.0.2.203"]);
        assert_eq!(usage(&pools, &p)[0].used, 4);
        // Asked for explicitly, the shared address is granted only to a compatible one.
        let mut ask = share("ns/ask", "6", Some("k"), 8080);
        ask.requested = vec![ip("192.0.2.200")];
        let mut clash = share("ns/clash", "7", Some("k"), 53);
        clash.requested = vec![ip("192.0.2.200")];
        let mut reqs = reqs.to_vec();
        reqs.extend([ask, clash]);
        let p = plan(&pools, &reqs);
        assert_eq!(got(&p, "ns/ask"), ["192.0.2.200"]);
        assert!(got(&p, "ns/clash")[0].contains("in use"));
    }

    #[test]
    fn namespaces_limit_a_pool() {
        let pools = [
            pool("team", &["192.0.2.200/32"], &["team"]),
            pool("all", &["192.0.2.210/32"], &[]),
        ];
        let p = plan(
            &pools,
            &[svc("other/a", "1"), svc("team/b", "2"), svc("team/c", "3")],
        );
        assert_eq!(got(&p, "other/a"), ["192.0.2.210"]);
        assert_eq!(got(&p, "team/b"), ["192.0.2.200"]);
        assert!(got(&p, "team/c")[0].contains("(team, all)"));
        let mut r = svc("other/d", "4");
        r.requested = vec![ip("192.0.2.200")];
        assert!(got(&plan(&pools, &[r]), "other/d")[0].contains("no pool for namespace other"));
    }

    #[test]
    fn dual_stack_gets_one_of_each_family_per_policy() {
        let pools = [
            pool("v4", &["192.0.2.200/32"], &[]),
            pool("v6", &["2001:db8::100/127"], &[]),
        ];
        let dual = |key: &str, created: &str, all: bool| Request {
            families: vec![Family::V6, Family::V4],
            all_families: all,
            ..svc(key, created)
        };
        let p = plan(
            &pools,
            &[
                dual("ns/a", "1", true),
                dual("ns/b", "2", false),
                dual("ns/c", "3", true),
            ],
        );
        assert_eq!(got(&p, "ns/a"), ["2001:db8::100", "192.0.2.200"]);
        assert_eq!(
            got(&p, "ns/b"),
            ["2001:db8::101"],
            "PreferDualStack takes what there is"
        );
        assert!(
            got(&p, "ns/c")[0].contains("no free IPv6/IPv4"),
            "{:?}",
            got(&p, "ns/c")
        );
        // A kept dual-stack status needs both families under RequireDualStack.
        let mut a = dual("ns/a", "1", true);
        a.current = vec![ip("192.0.2.200")];
        assert_eq!(
            got(&plan(&pools, &[a]), "ns/a"),
            ["2001:db8::100", "192.0.2.200"]
        );
    }

    #[test]
    fn a_huge_ipv6_pool_costs_steps_by_what_is_held_not_its_size() {
        let pools = [pool("big", &["2001:db8::/32"], &[])];
        let reqs: Vec<Request> = (0..300)
            .map(|i| Request {
                families: vec![Family::V6],
                ..svc(&format!("ns/s{i:03}"), &format!("{i:03}"))
            })
            .collect();
        let p = plan(&pools, &reqs);
        assert_eq!(got(&p, "ns/s299"), ["2001:db8::12b"]);
        assert_eq!(usage(&pools, &p)[0].total, 1u128 << 96);
    }

    #[test]
    fn the_last_address_of_a_range_is_given_and_then_none() {
        let pools = [pool("a", &["192.0.2.255/32", "198.51.100.0/32"], &[])];
        let p = plan(
            &pools,
            &[svc("ns/a", "1"), svc("ns/b", "2"), svc("ns/c", "3")],
        );
        assert_eq!(got(&p, "ns/a"), ["192.0.2.255"]);
        assert_eq!(got(&p, "ns/b"), ["198.51.100.0"]);
        assert!(got(&p, "ns/c")[0].starts_with("refused"));
    }
}
