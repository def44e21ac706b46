//! Checks of the kernel settings xvip depends on: the SNAT ports against the ephemeral
//! ports (`config::parse::check_snat_ephemeral`, which `xvip run` refuses to start on),
//! reverse-path filtering where the kernel's stack sees the VIP's traffic, and, with IPv6
//! VIPs, IPv6 on the interfaces (and the link-local address VRRPv3 over IPv6 speaks from).

use super::Finding;
use crate::config::{self, Mode, Settings};

/// Every sysctl check, in order.
pub fn checks(s: &Settings) -> Vec<Finding> {
    let ephemeral = std::fs::read_to_string(config::parse::LOCAL_PORT_RANGE)
        .ok()
        .and_then(|t| config::parse::parse_local_port_range(&t));
    let mut out = vec![snat_ports(
        s,
        config::parse::check_snat_ephemeral(
            s,
            &crate::dataplane::local::local_addresses(),
            ephemeral,
        ),
        ephemeral,
    )];
    let all = read_u32("all", "rp_filter");
    for i in &s.interfaces {
        out.push(rp_filter(
            i,
            all,
            read_u32(i, "rp_filter"),
            s.interfaces.len(),
            s.mode,
        ));
    }
    if !s.vips6.is_empty() {
        let proc_ipv6 = std::path::Path::new("/proc/sys/net/ipv6").is_dir();
        for (n, i) in s.interfaces.iter().enumerate() {
            let disabled =
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{i}/disable_ipv6"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
            let link_local =
                crate::announce::ndp::link_local(&crate::announce::ndp::interface_addresses(i));
            // VRRP speaks from the first interface only.
            let vrrp = n == 0 && s.vrrp.is_some();
            out.push(ipv6(i, proc_ipv6, disabled, link_local, vrrp));
        }
    }
    out
}

/// IPv6 on an attached interface, with IPv6 VIPs: off in the kernel (`ipv6.disable=1`:
/// no `/proc/sys/net/ipv6`) or on the interface (`disable_ipv6`), the NDP socket cannot
/// serve them; VRRPv3 over IPv6 (`vrrp`) also needs a link-local source address.
pub fn ipv6(
    interface: &str,
    proc_ipv6: bool,
    disabled: Option<u32>,
    link_local: Option<std::net::Ipv6Addr>,
    vrrp: bool,
) -> Finding {
    const CHECK: &str = "ipv6";
    if !proc_ipv6 {
        return Finding::fail(
            CHECK,
            format!(
                "{interface}: IPv6 is off in the kernel (no /proc/sys/net/ipv6), but IPv6 VIPs are configured"
            ),
            "remove ipv6.disable=1 from the kernel command line and reboot, or serve IPv4 VIPs only",
        );
    }
    if disabled == Some(1) {
        return Finding::fail(
            CHECK,
            format!(
                "{interface}: net.ipv6.conf.{interface}.disable_ipv6=1, but IPv6 VIPs are configured"
            ),
            format!(
                "sysctl -w net.ipv6.conf.{interface}.disable_ipv6=0 (and set it in /etc/sysctl.d)"
            ),
        );
    }
    match (link_local, vrrp) {
        (None, true) => Finding::fail(
            CHECK,
            format!(
                "{interface}: IPv6 on, but no link-local address: VRRPv3 over IPv6 sends its adverts from one"
            ),
            format!(
                "ip link set {interface} addrgenmode eui64 (or add one: ip -6 addr add fe80::1/64 dev {interface})"
            ),
        ),
        (Some(ll), _) => Finding::ok(CHECK, format!("{interface}: IPv6 on, link-local {ll}")),
        (None, false) => Finding::ok(CHECK, format!("{interface}: IPv6 on")),
    }
}

fn read_u32(interface: &str, name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{interface}/{name}"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// The SNAT range check's verdict as a finding.
pub fn snat_ports(
    s: &Settings,
    verdict: Result<(), config::ConfigError>,
    ephemeral: Option<(u16, u16)>,
) -> Finding {
    const CHECK: &str = "snat-ports";
    let (min, max) = s.snat_ports;
    if let Err(e) = verdict {
        let text = e.to_string();
        // "invalid --snat-ports 'A-B': overlaps ...: choose ... or narrow ..."
        let (seen, fix) = text.split_once(": choose ").unwrap_or((&text, ""));
        return Finding::fail(CHECK, seen, format!("choose {fix}"));
    }
    let seen = match (s.mode, ephemeral) {
        (Mode::Dnat, _) => format!("{min}-{max} unused (dnat mode)"),
        (_, Some((a, b))) => match config::parse::range_overlap(s.snat_ports, (a, b)) {
            Some(_) => format!(
                "{min}-{max} overlaps the ephemeral ports {a}-{b}, but the SNAT address {} is not this node's",
                s.snat_ip
            ),
            None => format!("{min}-{max} clear of the ephemeral ports {a}-{b}"),
        },
        (_, None) => format!(
            "{min}-{max} (cannot read {})",
            config::parse::LOCAL_PORT_RANGE
        ),
    };
    Finding::ok(CHECK, seen)
}

/// Reverse-path filtering on an attached interface. XDP sees packets before it, so it
/// only matters for what the program passes up the stack whose source is routed out of
/// another interface: with several interfaces (clients on one, masters on another) a local
/// backend's clients, and in DNAT mode (this node the masters' gateway) replies the program
/// does not track. The kernel applies the larger of `all` and the interface's value.
pub fn rp_filter(
    interface: &str,
    all: Option<u32>,
    own: Option<u32>,
    interfaces: usize,
    mode: Mode,
) -> Finding {
    const CHECK: &str = "rp-filter";
    let Some(v) = all.max(own) else {
        return Finding::ok(CHECK, format!("{interface}: cannot read rp_filter"));
    };
    let seen = format!("{interface}: rp_filter={v} (all={})", all.unwrap_or(0));
    if v != 1 || (interfaces < 2 && mode == Mode::Fullnat) {
        return Finding::ok(CHECK, seen);
    }
    let why = if interfaces > 1 {
        "with several interfaces"
    } else {
        "in dnat mode"
    };
    Finding::warn(
        CHECK,
        format!(
            "{seen}: strict reverse-path filtering {why} drops packets passed to the kernel whose source is routed out of another interface"
        ),
        format!(
            "use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{interface}.rp_filter=2"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;
    use crate::config::args::RunArgs;

    fn settings(extra: &[&str]) -> Settings {
        let mut args = RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["192.0.2.100".into()],
            backends: vec!["192.0.2.11".into()],
            ..RunArgs::default()
        };
        for pair in extra.chunks(2) {
            match pair[0] {
                "--snat-ip" => args.snat_ip = Some(pair[1].into()),
                "--snat-ports" => args.snat_ports = Some(pair[1].into()),
                other => panic!("{other}"),
            }
        }
        args.resolve().unwrap()
    }

    #[test]
    fn a_snat_range_overlapping_the_ephemeral_ports_of_a_node_address_fails() {
        let s = settings(&["--snat-ip", "192.0.2.2", "--snat-ports", "30000-40000"]);
        let eph = Some((32768, 60999));
        let verdict = config::parse::check_snat_ephemeral(&s, &["192.0.2.2".parse().unwrap()], eph);
        let f = snat_ports(&s, verdict, eph);
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.seen
                .contains("overlaps the kernel's ephemeral ports 32768-60999"),
            "{}",
            f.seen
        );
        assert!(
            f.fix
                .starts_with("choose --snat-ports outside them (e.g. 30000-32767)"),
            "{}",
            f.fix
        );
        let f = snat_ports(&s, Ok(()), eph);
        assert_eq!(f.level, Level::Ok);
        assert!(f.seen.contains("is not this node's"), "{}", f.seen);
        let s = settings(&["--snat-ports", "20000-29999"]);
        assert_eq!(
            snat_ports(&s, Ok(()), eph).line(),
            "ok   snat-ports: 20000-29999 clear of the ephemeral ports 32768-60999"
        );
    }

    #[test]
    fn strict_rp_filter_warns_only_where_the_stack_sees_the_traffic() {
        assert_eq!(
            rp_filter("eth0", Some(1), Some(0), 1, Mode::Fullnat).level,
            Level::Ok
        );
        let f = rp_filter("eth0", Some(0), Some(1), 2, Mode::Fullnat);
        assert_eq!(f.level, Level::Warn);
        assert!(f.seen.contains("with several interfaces"), "{}", f.seen);
        assert!(
            f.fix.contains("net.ipv4.conf.eth0.rp_filter=2"),
            "{}",
            f.fix
        );
        assert_eq!(
            rp_filter("eth0", Some(1), Some(0), 1, Mode::Dnat).level,
            Level::Warn
        );
        assert_eq!(
            rp_filter("eth0", Some(2), Some(1), 2, Mode::Dnat).level,
            Level::Ok
        );
    }

    #[test]
    fn ipv6_off_in_the_kernel_or_on_the_interface_fails_and_vrrp_needs_a_link_local() {
        let ll: std::net::Ipv6Addr = "fe80::2".parse().unwrap();
        let f = ipv6("eth0", false, None, None, false);
        assert_eq!(f.level, Level::Fail);
        assert!(f.seen.contains("no /proc/sys/net/ipv6"), "{f:?}");
        assert_eq!(
            ipv6("eth0", true, Some(1), Some(ll), true).line(),
            "fail ipv6: eth0: net.ipv6.conf.eth0.disable_ipv6=1, but IPv6 VIPs are configured; fix: sysctl -w net.ipv6.conf.eth0.disable_ipv6=0 (and set it in /etc/sysctl.d)"
        );
        let f = ipv6("eth0", true, Some(0), None, true);
        assert_eq!(f.level, Level::Fail);
        assert!(f.fix.contains("addrgenmode eui64"), "{f:?}");
        assert_eq!(ipv6("eth0", true, Some(0), None, false).level, Level::Ok);
        assert_eq!(
            ipv6("eth0", true, Some(0), Some(ll), true).line(),
            "ok   ipv6: eth0: IPv6 on, link-local fe80::2"
        );
    }
}
