//! The Services section (`--services`): Services of `type: LoadBalancer` get an address
//! from the pools here (`[[services.pool]]`, `--services-pool`), written to their status
//! and announced like the VIP (docs/services.md).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::ConfigError;

/// The `loadBalancerClass` xvip serves.
pub const CLASS: &str = "xvip.io/lb";
/// Most pools.
pub const MAX_POOLS: usize = 64;
/// Most ranges in one pool.
pub const MAX_RANGES: usize = 64;
/// Most namespaces one pool may be limited to.
pub const MAX_NAMESPACES: usize = 256;

/// One range of addresses, both ends included, of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddrRange {
    /// `192.0.2.200/29` (every address of the prefix, as MetalLB counts them),
    /// `192.0.2.200-192.0.2.210`, or one address.
    ///
    /// # Errors
    /// A reason naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((a, len)) = s.split_once('/') {
            let a: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an address"))?;
            let bits = if a.is_ipv4() { 32 } else { 128 };
            let len: u32 = len
                .parse()
                .ok()
                .filter(|l| *l <= bits)
                .ok_or_else(|| format!("prefix length {len:?} is not 0-{bits}"))?;
            let host_bits = bits - len;
            let mask: u128 = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let n = to_u128(a);
            if n & mask != 0 {
                return Err(format!("{s} has host bits set"));
            }
            return Ok(Self {
                first: from_u128(n, a.is_ipv4()),
                last: from_u128(n | mask, a.is_ipv4()),
            });
        }
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an address"))?;
        let last: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not an address"))?;
        if first.is_ipv4() != last.is_ipv4() {
            return Err(format!("{s} mixes the families"));
        }
        if to_u128(first) > to_u128(last) {
            return Err(format!("{s} ends before it starts"));
        }
        Ok(Self { first, last })
    }

    /// Whether `a` is inside.
    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.first.is_ipv4()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(a))
    }

    /// How many addresses (saturating at `u128::MAX`).
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    /// Never empty: both ends are included.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`].
pub fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

/// One pool: named ranges, optionally only for some namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub ranges: Vec<AddrRange>,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
}

/// `--services` and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesSettings {
    /// Serve Services with no `loadBalancerClass` too (`--services-default-class`).
    pub default_class: bool,
    /// Kubeconfig to watch Services with (`--services-kubeconfig`, else
    /// `--discover-from-kubeconfig`).
    pub kubeconfig: PathBuf,
    pub pools: Vec<PoolSpec>,
    /// This node's Kubernetes name (`--services-node-name`, else the host name): whose
    /// endpoints are local for `externalTrafficPolicy: Local`.
    pub node_name: String,
}

/// `[services]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServicesFile {
    pub(super) enabled: Option<bool>,
    pub(super) default_class: Option<bool>,
    pub(super) kubeconfig: Option<PathBuf>,
    pub(super) node_name: Option<String>,
    #[serde(default)]
    pub(super) pool: Vec<PoolFile>,
}

/// `[[services.pool]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PoolFile {
    pub(super) name: String,
    pub(super) addresses: Vec<String>,
    #[serde(default)]
    pub(super) namespaces: Vec<String>,
}

fn bad(value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::invalid("--services-pool", value, reason)
}

/// A pool name: what goes into a metric label and an event, kept plain.
fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(name, "a pool name is 1-63 of [A-Za-z0-9_-]"));
    }
    Ok(())
}

/// The section from the flags (`flag_pools`: `[NAME=]RANGE`, each repeat adding a range,
/// to the pool `default` when unnamed) over the file.
///
/// # Errors
/// The first bad pool, range or namespace; `--services` without any pool or kubeconfig.
#[allow(clippy::too_many_arguments, reason = "one per flag of the section")]
pub(super) fn resolve(
    enabled_flag: bool,
    default_class_flag: bool,
    kubeconfig_flag: Option<&Path>,
    node_name_flag: Option<&str>,
    flag_pools: &[String],
    discover: Option<&Path>,
    file: Option<&ServicesFile>,
) -> Result<Option<ServicesSettings>, ConfigError> {
    let enabled = enabled_flag || file.and_then(|f| f.enabled).unwrap_or(false);
    if !enabled {
        return Ok(None);
    }
    let mut pools: Vec<PoolSpec> = Vec::new();
    if flag_pools.is_empty() {
        for p in file.map(|f| f.pool.as_slice()).unwrap_or_default() {
            check_name(&p.name)?;
            if pools.iter().any(|q| q.name == p.name) {
                return Err(bad(&p.name, "two pools of this name"));
            }
            if p.namespaces.len() > MAX_NAMESPACES {
                return Err(bad(
                    &p.name,
                    format!("more than {MAX_NAMESPACES} namespaces"),
                ));
            }
            let ranges = p
                .addresses
                .iter()
                .map(|a| AddrRange::parse(a).map_err(|e| bad(a, e)))
                .collect::<Result<Vec<_>, _>>()?;
            pools.push(PoolSpec {
                name: p.name.clone(),
                ranges,
                namespaces: p.namespaces.clone(),
            });
        }
    } else {
        for v in flag_pools {
            let (name, range) = v.split_once('=').unwrap_or(("default", v));
            check_name(name)?;
            let r = AddrRange::parse(range).map_err(|e| bad(v, e))?;
            match pools.iter_mut().find(|p| p.name == name) {
                Some(p) => p.ranges.push(r),
                None => pools.push(PoolSpec {
                    name: name.to_string(),
                    ranges: vec![r],
                    namespaces: Vec::new(),
                }),
            }
        }
    }
    if pools.is_empty() {
        return Err(ConfigError::Missing {
            field: "--services-pool",
            hint: "--services hands out addresses from a pool: give --services-pool 192.0.2.200/29 or [[services.pool]]",
        });
    }
    if pools.len() > MAX_POOLS {
        return Err(bad(pools.len(), format!("at most {MAX_POOLS} pools")));
    }
    for p in &pools {
        if p.ranges.is_empty() || p.ranges.len() > MAX_RANGES {
            return Err(bad(&p.name, format!("a pool holds 1-{MAX_RANGES} ranges")));
        }
        for (i, r) in p.ranges.iter().enumerate() {
            for q in pools.iter().flat_map(|q| q.ranges.iter()) {
                if std::ptr::eq(q, r) {
                    continue;
                }
                if q.contains(r.first) || q.contains(r.last) || r.contains(q.first) {
                    return Err(bad(
                        format!("{}-{}", r.first, r.last),
                        format!(
                            "overlaps {}-{} (range {i} of pool {})",
                            q.first, q.last, p.name
                        ),
                    ));
                }
            }
        }
    }
    let kubeconfig = kubeconfig_flag
        .map(Path::to_path_buf)
        .or_else(|| file.and_then(|f| f.kubeconfig.clone()))
        .or_else(|| discover.map(Path::to_path_buf))
        .ok_or(ConfigError::Missing {
            field: "--services-kubeconfig",
            hint: "--services watches the API: give --services-kubeconfig (or --discover-from-kubeconfig), e.g. /etc/kubernetes/admin.conf",
        })?;
    let given = node_name_flag
        .map(String::from)
        .or_else(|| file.and_then(|f| f.node_name.clone()));
    // The host name is taken as it is (lower-cased); a name given is checked.
    let node_name = given.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_lowercase()
    });
    if given.is_some()
        && (node_name.is_empty()
            || node_name.len() > 253
            || !node_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Err(ConfigError::invalid(
            "--services-node-name",
            &node_name,
            "a Kubernetes node name: up to 253 of [a-z0-9.-]",
        ));
    }
    Ok(Some(ServicesSettings {
        default_class: default_class_flag || file.and_then(|f| f.default_class).unwrap_or(false),
        kubeconfig,
        pools,
        node_name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_prefixes_spans_and_single_addresses() {
        let r = AddrRange::parse("192.0.2.200/29").unwrap();
        assert_eq!(r.first.to_string(), "192.0.2.200");
        assert_eq!(r.last.to_string(), "192.0.2.207");
        assert_eq!(r.len(), 8);
        let r = AddrRange::parse("198.51.100.10 - 198.51.100.12").unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.contains("198.51.100.12".parse().unwrap()));
        assert!(!r.contains("198.51.100.13".parse().unwrap()));
        assert!(!r.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(AddrRange::parse("2001:db8::5").unwrap().len(), 1);
        assert_eq!(AddrRange::parse("2001:db8::/64").unwrap().len(), 1 << 64);
        assert_eq!(AddrRange::parse("::/0").unwrap().len(), u128::MAX);
        for bad in [
            "192.0.2.201/29",
            "192.0.2.0/33",
            "192.0.2.9-192.0.2.1",
            "192.0.2.1-2001:db8::1",
            "nope",
            "",
        ] {
            assert!(AddrRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_make_pools_and_bad_ones_are_refused_with_the_value() {
        let kc = Path::new("/k");
        let s = resolve(
            true,
            false,
            Some(kc),
            None,
            &[
                "192.0.2.200/30".into(),
                "v6=2001:db8::10-2001:db8::1f".into(),
                "192.0.2.210".into(),
            ],
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.pools.len(), 2);
        assert_eq!(s.pools[0].name, "default");
        assert_eq!(s.pools[0].ranges.len(), 2);
        assert_eq!(resolve(false, true, None, None, &[], None, None), Ok(None));
        let e = resolve(
            true,
            false,
            Some(kc),
            None,
            &["192.0.2.200/30".into(), "x=192.0.2.201".into()],
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let e = resolve(
            true,
            false,
            Some(kc),
            None,
            &["bad name=192.0.2.1".into()],
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad name"), "{e}");
        assert!(matches!(
            resolve(true, false, Some(kc), None, &[], None, None),
            Err(ConfigError::Missing { .. })
        ));
        assert!(matches!(
            resolve(true, false, None, None, &["192.0.2.1".into()], None, None),
            Err(ConfigError::Missing {
                field: "--services-kubeconfig",
                ..
            })
        ));
    }
}
