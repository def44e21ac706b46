//! Value parsers and checks of single settings: interface names, addresses of either
//! family, ports and port ranges, durations, the SNAT range against the kernel's ephemeral
//! ports.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use lb_common::DEFAULT_PORT;

use super::{ConfigError, Mode, Settings};

pub(super) fn validate_interface_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(ConfigError::invalid(
            "--interface",
            name,
            "not a valid interface name",
        ));
    }
    Ok(())
}

/// An IPv4 or IPv6 unicast address (IPv6 without brackets).
pub(super) fn parse_any_ip(field: &'static str, s: &str) -> Result<IpAddr, ConfigError> {
    let ip: IpAddr = s
        .parse()
        .map_err(|_| ConfigError::invalid(field, s, "not an IPv4 or IPv6 address"))?;
    let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
    if ip.is_unspecified() || broadcast || ip.is_multicast() {
        return Err(ConfigError::invalid(field, s, "not a unicast address"));
    }
    Ok(ip)
}

/// `ADDR[:PORT]` for IPv4, `[ADDR]:PORT` or a bare `ADDR` for IPv6, with `DEFAULT_PORT`.
pub(super) fn parse_addr_port(field: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| ConfigError::invalid(field, s, "'[' without ']'"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => {
                    return Err(ConfigError::invalid(field, s, "expected [IPv6]:PORT"));
                }
            },
        }
    } else if s.matches(':').count() > 1 {
        // Several colons and no brackets: a bare IPv6 address.
        (s, None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let ip = parse_any_ip(field, host).map_err(|_| {
        ConfigError::invalid(field, s, format!("'{host}' is not an IPv4 or IPv6 address"))
    })?;
    if s.starts_with('[') && ip.is_ipv4() {
        return Err(ConfigError::invalid(
            field,
            s,
            "brackets are for IPv6 addresses",
        ));
    }
    let port = port
        .map(|p| parse_port(field, s, p))
        .transpose()?
        .unwrap_or(DEFAULT_PORT);
    Ok(SocketAddr::new(ip, port))
}

/// Parses a VIP of either family: `IP[:PORT]`, `[IPv6]:PORT` or `IPv6`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the value.
pub fn parse_vip_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    parse_addr_port("--vip", s)
}

/// Role suffix of a backend held only for when every primary is down (`ADDR,backup`).
pub const BACKUP_SUFFIX: &str = "backup";

/// Parses a backend with its weight and role: `ADDR[:PORT][@WEIGHT][,backup]` (the forms
/// of [`parse_backend_addr`]); returns whether it is a backup.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the value: a bad address or weight, or a role other
/// than `backup`.
pub fn parse_backend(s: &str) -> Result<(SocketAddr, u32, bool), ConfigError> {
    let (spec, backup) = match s.split_once(',') {
        Some((spec, role)) if role.trim() == BACKUP_SUFFIX => (spec.trim(), true),
        Some((_, role)) => {
            return Err(ConfigError::invalid(
                "--backend",
                s,
                format!("role '{role}' is not 'backup'"),
            ));
        }
        None => (s, false),
    };
    let (addr, weight) = parse_backend_addr(spec).map_err(|e| match e {
        ConfigError::Invalid { field, reason, .. } => ConfigError::Invalid {
            field,
            value: s.into(),
            reason,
        },
        e => e,
    })?;
    Ok((addr, weight, backup))
}

/// Joins the role of a comma-split backend list back onto its address: clap and the
/// environment split `--backend 192.0.2.13,backup` at the comma, so a lone `backup` item
/// belongs to the item before it.
///
/// # Errors
/// [`ConfigError::Invalid`] when the list starts with `backup` (no backend to apply it to).
pub(super) fn join_backend_roles(list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        if item.trim() == BACKUP_SUFFIX {
            let Some(last) = out.last_mut() else {
                return Err(ConfigError::invalid(
                    "--backend",
                    item,
                    "a role needs a backend before it (ADDR,backup)",
                ));
            };
            last.push(',');
            last.push_str(BACKUP_SUFFIX);
        } else {
            out.push(item);
        }
    }
    Ok(out)
}

/// Parses a backend of either family with its weight: `ADDR[:PORT][@WEIGHT]`, IPv6 as
/// `[IPv6]:PORT[@WEIGHT]` or a bare `IPv6[@WEIGHT]`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the value.
pub fn parse_backend_addr(s: &str) -> Result<(SocketAddr, u32), ConfigError> {
    let (hostport, weight) = match s.rsplit_once('@') {
        Some((hp, w)) => {
            let w = w
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= 1000)
                .ok_or_else(|| {
                    ConfigError::invalid("--backend", s, format!("weight '{w}' is not in 0-1000"))
                })?;
            (hp, w)
        }
        None => (s, 1),
    };
    let addr = parse_addr_port("--backend", hostport).map_err(|e| match e {
        ConfigError::Invalid { field, reason, .. } => ConfigError::Invalid {
            field,
            value: s.into(),
            reason,
        },
        e => e,
    })?;
    Ok((addr, weight))
}

pub(super) fn parse_port(field: &'static str, whole: &str, s: &str) -> Result<u16, ConfigError> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(ConfigError::invalid(
            field,
            whole,
            format!("port '{s}' is not in 1-65535"),
        )),
        Ok(p) => Ok(p),
    }
}

pub(super) fn parse_port_range(s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = |r: &str| ConfigError::invalid("--snat-ports", s, r);
    let (a, b) = s.split_once('-').ok_or_else(|| bad("expected MIN-MAX"))?;
    let a = a
        .trim()
        .parse::<u16>()
        .map_err(|_| bad("MIN is not a port"))?;
    let b = b
        .trim()
        .parse::<u16>()
        .map_err(|_| bad("MAX is not a port"))?;
    if a < 1024 || b < a {
        return Err(bad("need 1024 <= MIN <= MAX"));
    }
    Ok((a, b))
}

/// The kernel's ephemeral (local) port range in this network namespace.
pub const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Parses `ip_local_port_range` ("32768\t60999\n").
pub fn parse_local_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
    match (it.next()??, it.next()??, it.next()) {
        (a, b, None) if a <= b => Some((a, b)),
        _ => None,
    }
}

/// The ports two inclusive ranges share, if any.
pub fn range_overlap(a: (u16, u16), b: (u16, u16)) -> Option<(u16, u16)> {
    let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
    (lo <= hi).then_some((lo, hi))
}

/// Refuses a SNAT port range that overlaps the kernel's ephemeral ports `ephemeral` when the
/// SNAT address is one of this node's addresses (`locals`): the data path would take the
/// replies of the node's own connections. Refused rather than carved out: every node must
/// pick the same SNAT port for a flow (takeover), so the range cannot silently depend on each
/// node's sysctl.
///
/// # Errors
/// [`ConfigError::Invalid`] naming both ranges and `--snat-ports`.
pub fn check_snat_ephemeral(
    s: &Settings,
    locals: &[Ipv4Addr],
    ephemeral: Option<(u16, u16)>,
) -> Result<(), ConfigError> {
    let (Mode::Fullnat, Some(eph)) = (s.mode, ephemeral) else {
        return Ok(());
    };
    if !locals.contains(&s.snat_ip) || range_overlap(s.snat_ports, eph).is_none() {
        return Ok(());
    }
    let (min, max) = s.snat_ports;
    let hint = if min < eph.0 {
        format!("{min}-{}", eph.0 - 1)
    } else if eph.1 < u16::MAX {
        format!("{}-{}", eph.1 + 1, if max > eph.1 { max } else { u16::MAX })
    } else {
        format!("1024-{}", eph.0.saturating_sub(1).max(1024))
    };
    Err(ConfigError::invalid(
        "--snat-ports",
        format!("{min}-{max}"),
        format!(
            "overlaps the kernel's ephemeral ports {}-{} ({LOCAL_PORT_RANGE}) and the SNAT address {} is this node's own: choose --snat-ports outside them (e.g. {hint}) or narrow net.ipv4.ip_local_port_range",
            eph.0, eph.1, s.snat_ip
        ),
    ))
}

/// Parses durations such as `200ms`, `1s`, `1.5s`, `2m`.
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::invalid(field, s, "expected a duration such as 200ms, 1s or 2m");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !(0.001..=3600.0).contains(&secs) {
        return Err(ConfigError::invalid(field, s, "must be between 1ms and 1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod snat_range_tests {
    use super::*;
    use crate::config::args::RunArgs;

    fn settings(snat_ip: &str, ports: &str) -> Settings {
        RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["192.0.2.100".into()],
            backends: vec!["192.0.2.11".into()],
            snat_ip: Some(snat_ip.into()),
            snat_ports: Some(ports.into()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn the_local_port_range_file_is_parsed_and_garbage_is_not() {
        assert_eq!(
            parse_local_port_range("32768\t60999\n"),
            Some((32768, 60999))
        );
        assert_eq!(parse_local_port_range("1024 1024"), Some((1024, 1024)));
        for bad in ["", "32768", "60999 32768", "a b", "1 2 3", "70000 80000"] {
            assert_eq!(parse_local_port_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn overlaps_are_found_at_every_edge() {
        assert_eq!(
            range_overlap((20000, 59999), (32768, 60999)),
            Some((32768, 59999))
        );
        assert_eq!(
            range_overlap((20000, 32768), (32768, 60999)),
            Some((32768, 32768))
        );
        assert_eq!(range_overlap((20000, 32767), (32768, 60999)), None);
        assert_eq!(range_overlap((61000, 65535), (32768, 60999)), None);
        assert_eq!(
            range_overlap((40000, 41000), (32768, 60999)),
            Some((40000, 41000))
        );
        assert_eq!(
            range_overlap((1024, 65535), (32768, 60999)),
            Some((32768, 60999))
        );
    }

    #[test]
    fn a_node_snat_address_with_overlapping_ports_is_refused_naming_both_ranges() {
        let node = [Ipv4Addr::new(192, 0, 2, 2)];
        let e = check_snat_ephemeral(
            &settings("192.0.2.2", "20000-59999"),
            &node,
            Some((32768, 60999)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--snat-ports '20000-59999'"), "{e}");
        assert!(
            e.contains("32768-60999") && e.contains("e.g. 20000-32767"),
            "{e}"
        );
        // The suggestion is itself accepted.
        check_snat_ephemeral(
            &settings("192.0.2.2", "20000-32767"),
            &node,
            Some((32768, 60999)),
        )
        .unwrap();
        let e = check_snat_ephemeral(
            &settings("192.0.2.2", "40000-65000"),
            &node,
            Some((1024, 50000)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("e.g. 50001-65000"), "{e}");
    }

    #[test]
    fn a_snat_address_that_is_not_the_nodes_or_an_unreadable_range_is_not_checked() {
        let node = [Ipv4Addr::new(192, 0, 2, 2)];
        check_snat_ephemeral(
            &settings("192.0.2.50", "20000-59999"),
            &node,
            Some((32768, 60999)),
        )
        .unwrap();
        check_snat_ephemeral(&settings("192.0.2.2", "20000-59999"), &node, None).unwrap();
    }

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(
            parse_duration("x", "200ms").unwrap(),
            Duration::from_millis(200)
        );
        assert_eq!(
            parse_duration("x", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x", "10").is_err());
        assert!(parse_duration("x", "2h").is_err());
    }
}
