//! What a reload (SIGHUP) of the configuration can apply: the settings that differ between
//! the running and the reloaded [`Settings`] and need a restart (a reload applies the
//! backends and the VRRP priority). A statement about the
//! settings alone; the daemon logs it and applies the rest.

use super::Settings;

/// The settings a SIGHUP reload cannot apply that differ between the running `old` and the
/// reloaded `new` configuration, by their configuration names. A reload applies the
/// backends (and their weights) and the VRRP priority (as keepalived's reload does: the
/// election takes it live); everything else is taken at start, turning VRRP on or off too. Exhaustive over
/// [`Settings`]: a new field does not compile until it is sorted here.
pub fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let Settings {
        interface,
        interfaces,
        vips,
        backends: _,
        vips6,
        backends6: _,
        mode,
        snat_ip,
        snat_ip6,
        snat_ports,
        health,
        metrics_addr,
        xdp_mode,
        attach,
        keep_attached,
        table_size,
        conntrack_size,
        garp_interval,
        pin_root,
        icmp_echo,
        local_connect,
        vrrp,
        discover_from_kubeconfig,
        sync,
        announce,
        route_table,
        services,
        // Read by `xvip doctor` only.
        control_plane_endpoint: _,
    } = new;
    let changed = [
        (
            "interface",
            *interface != old.interface || *interfaces != old.interfaces,
        ),
        ("vips", *vips != old.vips || *vips6 != old.vips6),
        ("mode", *mode != old.mode),
        (
            "snat-ip",
            *snat_ip != old.snat_ip || *snat_ip6 != old.snat_ip6,
        ),
        ("snat-ports", *snat_ports != old.snat_ports),
        ("health", *health != old.health),
        ("metrics-addr", *metrics_addr != old.metrics_addr),
        ("xdp-mode", *xdp_mode != old.xdp_mode),
        ("attach", *attach != old.attach),
        ("keep-attached", *keep_attached != old.keep_attached),
        ("table-size", *table_size != old.table_size),
        ("conntrack-size", *conntrack_size != old.conntrack_size),
        ("garp-interval", *garp_interval != old.garp_interval),
        ("pin-root", *pin_root != old.pin_root),
        ("icmp-echo", *icmp_echo != old.icmp_echo),
        ("local-connect", *local_connect != old.local_connect),
        ("vrrp", !same_but_priority(vrrp.as_ref(), old.vrrp.as_ref())),
        (
            "discover-from-kubeconfig",
            *discover_from_kubeconfig != old.discover_from_kubeconfig,
        ),
        ("sync", *sync != old.sync),
        ("announce", *announce != old.announce),
        ("route-table", *route_table != old.route_table),
        ("services", *services != old.services),
    ];
    changed
        .into_iter()
        .filter(|(_, c)| *c)
        .map(|(name, _)| name)
        .collect()
}

/// Whether two VRRP settings differ at most in the priority (both absent: the same).
fn same_but_priority(
    a: Option<&crate::config::vrrp::VrrpSettings>,
    b: Option<&crate::config::vrrp::VrrpSettings>,
) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let a = crate::config::vrrp::VrrpSettings {
                priority: b.priority,
                ..a.clone()
            };
            a == *b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::args::RunArgs;

    fn settings(extra: &[&str]) -> Settings {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let mut argv = vec![
            "xvip",
            "--interface",
            "eth0",
            "--vip",
            "192.0.2.100",
            "--backend",
            "192.0.2.11",
        ];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).run.resolve().unwrap()
    }

    #[test]
    fn a_reload_names_every_changed_setting_it_cannot_apply_and_never_the_backends() {
        let old = settings(&[]);
        assert!(needs_restart(&old, &old.clone()).is_empty());
        let more_backends = settings(&["--backend", "192.0.2.12", "--backend", "192.0.2.13"]);
        assert!(needs_restart(&old, &more_backends).is_empty());
        let new = settings(&[
            "--vip",
            "192.0.2.101",
            "--snat-ports",
            "40000-40999",
            "--backend",
            "192.0.2.12",
        ]);
        assert_eq!(needs_restart(&old, &new), ["vips", "snat-ports"]);
        let new = settings(&["--mode", "dnat", "--health-interval", "3s"]);
        assert_eq!(needs_restart(&old, &new), ["mode", "health"]);
    }

    #[test]
    fn a_new_vrrp_priority_applies_live_but_other_vrrp_changes_and_turning_it_on_do_not() {
        let old = settings(&["--vrrp-vrid", "51", "--vrrp-priority", "150"]);
        let lower = settings(&["--vrrp-vrid", "51", "--vrrp-priority", "90"]);
        assert!(needs_restart(&old, &lower).is_empty());
        let vrid = settings(&["--vrrp-vrid", "52", "--vrrp-priority", "90"]);
        assert_eq!(needs_restart(&old, &vrid), ["vrrp"]);
        assert_eq!(needs_restart(&settings(&[]), &old), ["vrrp"]);
        assert_eq!(needs_restart(&old, &settings(&[])), ["vrrp"]);
    }
}
