//! With `--services`: the Service pools against the addresses they must not hand out. Two
//! pools overlapping each other is refused by the configuration already (status 2); a pool
//! holding a VIP, the SNAT address, a master or an address of this node is not: xvip would
//! give a Service an address that something else answers for.

use std::net::IpAddr;

use super::Finding;
use crate::config::Settings;
use crate::config::services::PoolSpec;

const CHECK: &str = "services-pools";

/// The check, when `--services` is on (else none).
pub fn checks(s: &Settings, locals: &[super::vip::LocalAddr]) -> Vec<Finding> {
    let Some(svc) = &s.services else {
        return Vec::new();
    };
    let mut taken: Vec<(IpAddr, String)> = super::vips(s)
        .into_iter()
        .map(|v| (v, "a VIP".to_string()))
        .collect();
    taken.push((IpAddr::V4(s.snat_ip), "the SNAT address".into()));
    taken.extend(
        s.snat_ip6
            .map(|a| (IpAddr::V6(a), "the IPv6 SNAT address".into())),
    );
    taken.extend(
        super::master_addrs(s)
            .into_iter()
            .map(|m| (m.ip(), "a master".into())),
    );
    taken.extend(locals.iter().map(|l| {
        (
            l.addr,
            format!("an address of this node on {}", l.interface),
        )
    }));
    // One line per address: the first thing it is (the SNAT address is often the node's).
    let mut seen = std::collections::BTreeSet::new();
    taken.retain(|(a, _)| seen.insert(*a));
    judge(&svc.pools, &taken)
}

/// One failing line per pool address that is also one of `taken` (each with what it is),
/// else one `ok`.
pub fn judge(pools: &[PoolSpec], taken: &[(IpAddr, String)]) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in pools {
        for r in &p.ranges {
            for (addr, what) in taken {
                if r.contains(*addr) {
                    out.push(Finding::fail(
                        CHECK,
                        format!(
                            "pool {}: {addr} (in {}-{}) is {what}: a Service given it takes its traffic",
                            p.name, r.first, r.last
                        ),
                        format!("leave {addr} out of pool {} (--services-pool, [[services.pool]])", p.name),
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        let n: usize = pools.iter().map(|p| p.ranges.len()).sum();
        out.push(Finding::ok(
            CHECK,
            format!(
                "{} pool(s), {n} range(s): no VIP, SNAT address, master or address of this node in them",
                pools.len()
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;
    use crate::config::services::AddrRange;

    #[test]
    fn a_pool_holding_the_vip_or_a_node_address_fails_naming_both() {
        let pools = vec![PoolSpec {
            name: "default".into(),
            ranges: vec![AddrRange::parse("192.0.2.96/28").unwrap()],
            namespaces: Vec::new(),
        }];
        let taken = vec![
            ("192.0.2.100".parse().unwrap(), "a VIP".to_string()),
            (
                "192.0.2.2".parse().unwrap(),
                "an address of this node on eth0".to_string(),
            ),
        ];
        let f = judge(&pools, &taken);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].line(),
            "fail services-pools: pool default: 192.0.2.100 (in 192.0.2.96-192.0.2.111) is a VIP: a Service given it takes its traffic; fix: leave 192.0.2.100 out of pool default (--services-pool, [[services.pool]])"
        );
        let f = judge(&pools, &taken[1..]);
        assert_eq!(f[0].level, Level::Ok);
        assert_eq!(
            f[0].seen,
            "1 pool(s), 1 range(s): no VIP, SNAT address, master or address of this node in them"
        );
    }
}
