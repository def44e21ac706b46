//! The section resolvers: flags over the file over the defaults, one method per section,
//! checked together, into [`Settings`]; the rules across sections (families, routed mode).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    time::Duration,
};

use lb_common::{
    DEFAULT_RING_SIZE, DEFAULT_SNAT_PORT_MAX, DEFAULT_SNAT_PORT_MIN, MAX_BACKENDS, MAX_RING_SIZE,
    MAX_VIPS,
};

use super::args::RunArgs;
use super::file::{FileConfig, OneOrMany, load_file};
use super::parse::{
    join_backend_roles, parse_any_ip, parse_backend, parse_duration, parse_port_range,
    parse_vip_addr, validate_interface_name,
};
use super::sync;
use super::vrrp;
use super::{
    Announce, BackendSpec, BackendSpec6, ConfigError, DEFAULT_CONNTRACK_SIZE,
    DEFAULT_GARP_INTERVAL, DEFAULT_METRICS_ADDR, DEFAULT_PIN_ROOT, DEFAULT_ROUTE_TABLE,
    HealthConfig, Mode, Settings, VipSpec, VipSpec6,
};

/// What `nat_section` settles: the mode, each family's SNAT address, the SNAT ports.
pub(super) type NatSection = (Mode, Ipv4Addr, Option<Ipv6Addr>, (u16, u16));

impl RunArgs {
    /// Merges flags/environment over the config file and defaults, and validates, one
    /// section at a time (each section's flags are checked together, in the order below).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad or missing setting.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let interfaces = self.interface_section(&file)?;
        let interface = interfaces[0].clone();
        let attach = self.attach.or(file.attach).unwrap_or_default();
        if attach != super::Attach::Xdp && interfaces.len() > 1 {
            return Err(ConfigError::invalid(
                "--attach",
                attach.name(),
                "tc and auto take one --interface (several interfaces: --attach xdp)",
            ));
        }
        let (vips, vips6) = self.vips_section(&file)?;
        let (backends, backends6) = self.backends_section(&file, &vips, &vips6)?;
        let (mode, snat_ip, snat_ip6, snat_ports) = self.nat_section(&file, &vips, &vips6)?;
        let health = self.health_section(&file)?;
        let metrics_addr = self.metrics_section(&file)?;
        let (table_size, conntrack_size) = self.tables_section(&file)?;
        let (vrrp, announce, route_table) = self.announce_section(&file, mode, snat_ip, &vips)?;
        check_family_rules(vrrp.as_ref(), announce, &vips, &vips6)?;
        let sync = self
            .sync_section(&file, vrrp.as_ref())?
            .map(|s| sync::SyncSettings { snat_ports, ..s });
        let services = super::services::resolve(
            self.services,
            self.services_default_class,
            self.services_kubeconfig.as_deref(),
            self.services_node_name.as_deref(),
            &self.services_pools,
            self.discover_from_kubeconfig
                .as_deref()
                .or(file.discover_from_kubeconfig.as_deref()),
            file.services.as_ref(),
        )?;
        // With VRRP the IPv4 election's master owns every Service address; a node with
        // only IPv6 VIPs has no such election and would announce none.
        if services.is_some() && vrrp.is_some() && vips.is_empty() {
            return Err(ConfigError::invalid(
                "--services",
                "on",
                "with VRRP the Service addresses follow the IPv4 VIP's election: add an IPv4 --vip \
                 (an IPv6-only VRRP group cannot announce Services yet; routed mode can)",
            ));
        }
        Ok(Settings {
            services,
            interface,
            interfaces,
            vips,
            backends,
            vips6,
            backends6,
            mode,
            snat_ip,
            snat_ip6,
            snat_ports,
            health,
            metrics_addr,
            xdp_mode: self.xdp_mode.or(file.xdp_mode).unwrap_or_default(),
            attach,
            keep_attached: self.keep_attached || file.keep_attached.unwrap_or(false),
            table_size,
            conntrack_size,
            garp_interval: match self.garp_interval.clone().or(file.garp_interval) {
                Some(s) => parse_duration("--garp-interval", &s)?,
                None => DEFAULT_GARP_INTERVAL,
            },
            pin_root: self
                .pin_root
                .clone()
                .or(file.pin_root)
                .unwrap_or_else(|| DEFAULT_PIN_ROOT.into()),
            icmp_echo: !(self.no_icmp_echo || file.no_icmp_echo.unwrap_or(false)),
            local_connect: !(self.no_local_connect || file.no_local_connect.unwrap_or(false)),
            vrrp,
            // Not checked for existence: /etc/kubernetes/admin.conf appears only after
            // `kubeadm init`, and discovery retries until it can read it.
            discover_from_kubeconfig: self
                .discover_from_kubeconfig
                .clone()
                .or(file.discover_from_kubeconfig),
            sync,
            control_plane_endpoint: self
                .control_plane_endpoint
                .clone()
                .or(file.control_plane_endpoint.clone())
                .map(|e| {
                    control_plane_host(&e).ok_or_else(|| {
                        ConfigError::invalid(
                            "--control-plane-endpoint",
                            &e,
                            "want a DNS name or an address, with an optional :PORT",
                        )
                    })
                })
                .transpose()?,
            announce,
            route_table,
        })
    }

    /// `--sync-key-file`: conntrack sync with the VRRP group's other nodes.
    fn sync_section(
        &self,
        file: &FileConfig,
        vrrp: Option<&vrrp::VrrpSettings>,
    ) -> Result<Option<sync::SyncSettings>, ConfigError> {
        let Some(path) = self.sync_key_file.clone().or(file.sync_key_file.clone()) else {
            return Ok(None);
        };
        let Some(vrrp) = vrrp else {
            return Err(ConfigError::invalid(
                "--sync-key-file",
                path.display(),
                "conntrack sync follows the VRRP group: set --vrrp-vrid too",
            ));
        };
        let key = sync::load_key(&path)
            .map_err(|reason| ConfigError::invalid("--sync-key-file", path.display(), reason))?;
        Ok(Some(sync::SyncSettings {
            key_file: path,
            key,
            // Sync runs over IPv4: the IPv4 peers of the VRRP group.
            peers: vrrp
                .peers
                .iter()
                .filter_map(|p| match p {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            port: sync::SYNC_PORT,
            snat_ports: (1, u16::MAX), // set from --snat-ports by the caller
        }))
    }

    /// `--interface`, repeated: at least one, at most `MAX_INTERFACES`, no name twice.
    fn interface_section(&self, file: &FileConfig) -> Result<Vec<String>, ConfigError> {
        let from_file = match file.interface.clone() {
            Some(OneOrMany::One(i)) => vec![i],
            Some(OneOrMany::Many(v)) => v,
            None => Vec::new(),
        };
        let interfaces = pick_list(&self.interface, Some(from_file));
        if interfaces.is_empty() {
            return Err(ConfigError::Missing {
                field: "--interface",
                hint: "the interface to serve the VIP on",
            });
        }
        for (i, name) in interfaces.iter().enumerate() {
            validate_interface_name(name)?;
            if interfaces[..i].contains(name) {
                return Err(ConfigError::invalid("--interface", name, "given twice"));
            }
        }
        if interfaces.len() > lb_common::MAX_INTERFACES {
            return Err(ConfigError::invalid(
                "--interface",
                interfaces.join(","),
                format!("at most {} interfaces", lb_common::MAX_INTERFACES),
            ));
        }
        Ok(interfaces)
    }

    /// `--vip`: at least one, at most `MAX_VIPS` of both families together, none twice;
    /// split by family.
    fn vips_section(
        &self,
        file: &FileConfig,
    ) -> Result<(Vec<VipSpec>, Vec<VipSpec6>), ConfigError> {
        let vip_strs = pick_list(&self.vips, file.vips.clone());
        if vip_strs.is_empty() {
            return Err(ConfigError::Missing {
                field: "--vip",
                hint: "at least one VIP, IP[:PORT]",
            });
        }
        let vips = vip_strs
            .iter()
            .map(|s| parse_vip_addr(s))
            .collect::<Result<Vec<_>, _>>()?;
        if vips.len() > MAX_VIPS as usize {
            return Err(ConfigError::invalid(
                "--vip",
                vips.len(),
                format!("at most {MAX_VIPS} VIPs"),
            ));
        }
        for (i, v) in vips.iter().enumerate() {
            if vips[..i].contains(v) {
                return Err(ConfigError::invalid("--vip", v, "given twice"));
            }
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for v in vips {
            match v {
                SocketAddr::V4(a) => v4.push(VipSpec {
                    addr: *a.ip(),
                    port: a.port(),
                }),
                SocketAddr::V6(a) => v6.push(VipSpec6 {
                    addr: *a.ip(),
                    port: a.port(),
                }),
            }
        }
        Ok((v4, v6))
    }

    /// `--backend`: at least one, at most `MAX_BACKENDS`, none twice, each of the family of
    /// some VIP (there is no translation between families), and every VIP's family has one.
    fn backends_section(
        &self,
        file: &FileConfig,
        vips: &[VipSpec],
        vips6: &[VipSpec6],
    ) -> Result<(Vec<BackendSpec>, Vec<BackendSpec6>), ConfigError> {
        let backend_strs = join_backend_roles(pick_list(&self.backends, file.backends.clone()))?;
        if backend_strs.is_empty() {
            return Err(ConfigError::Missing {
                field: "--backend",
                hint: "at least one backend, IP[:PORT][@WEIGHT][,backup]",
            });
        }
        let backends = backend_strs
            .iter()
            .map(|s| parse_backend(s).map(|b| (s, b)))
            .collect::<Result<Vec<_>, _>>()?;
        if backends.len() > MAX_BACKENDS as usize {
            return Err(ConfigError::invalid(
                "--backend",
                backends.len(),
                format!("at most {MAX_BACKENDS} backends"),
            ));
        }
        for (i, (_, b)) in backends.iter().enumerate() {
            if backends[..i].iter().any(|(_, o)| o.0 == b.0) {
                return Err(ConfigError::invalid("--backend", b.0, "given twice"));
            }
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (given, (addr, weight, backup)) in &backends {
            match addr {
                SocketAddr::V4(a) if !vips.is_empty() => v4.push(BackendSpec {
                    addr: *a,
                    weight: *weight,
                    backup: *backup,
                }),
                SocketAddr::V6(a) if !vips6.is_empty() => v6.push(BackendSpec6 {
                    addr: *a,
                    weight: *weight,
                    backup: *backup,
                }),
                _ => {
                    let (this, other) = if addr.is_ipv4() {
                        ("IPv4", "IPv6")
                    } else {
                        ("IPv6", "IPv4")
                    };
                    return Err(ConfigError::invalid(
                        "--backend",
                        given,
                        format!(
                            "an {this} backend, but every VIP is {other} (a VIP's backends are of its family)"
                        ),
                    ));
                }
            }
        }
        let lone = |family: &str, vip: String| {
            ConfigError::invalid(
                "--vip",
                vip,
                format!(
                    "no {family} backend for this {family} VIP (a VIP's backends are of its family)"
                ),
            )
        };
        if let (Some(v), true) = (vips.first(), v4.is_empty()) {
            return Err(lone("IPv4", SocketAddrV4::new(v.addr, v.port).to_string()));
        }
        if let (Some(v), true) = (vips6.first(), v6.is_empty()) {
            return Err(lone(
                "IPv6",
                SocketAddrV6::new(v.addr, v.port, 0, 0).to_string(),
            ));
        }
        // Backups stand in for primaries: a family of nothing but backups has none to
        // stand in for (and would balance over them as if they were primaries).
        let all_backup = |family: &str, first: String| {
            ConfigError::invalid(
                "--backend",
                first,
                format!("every {family} backend is a backup: at least one must be a primary"),
            )
        };
        if v4.iter().all(|b| b.backup)
            && let Some(b) = v4.first()
        {
            return Err(all_backup("IPv4", b.addr.to_string()));
        }
        if v6.iter().all(|b| b.backup)
            && let Some(b) = v6.first()
        {
            return Err(all_backup("IPv6", b.addr.to_string()));
        }
        Ok((v4, v6))
    }

    /// `--mode`, `--snat-ip`, `--snat-ports`: the SNAT range must not hold a VIP port of
    /// the SNAT address.
    fn nat_section(
        &self,
        file: &FileConfig,
        vips: &[VipSpec],
        vips6: &[VipSpec6],
    ) -> Result<NatSection, ConfigError> {
        let mode = self.mode.or(file.mode).unwrap_or_default();
        // `--snat-ip A` or, dual stack, `--snat-ip A,B`: at most one of each family, each
        // family's only when it has VIPs; the default is the family's first VIP.
        let (mut snat4, mut snat6) = (None, None);
        if let Some(list) = self.snat_ip.clone().or(file.snat_ip.clone()) {
            for one in list.split(',').map(str::trim) {
                match parse_any_ip("--snat-ip", one)? {
                    IpAddr::V4(a) if snat4.is_none() && !vips.is_empty() => snat4 = Some(a),
                    IpAddr::V6(a) if snat6.is_none() && !vips6.is_empty() => snat6 = Some(a),
                    a => {
                        return Err(ConfigError::invalid(
                            "--snat-ip",
                            list.clone(),
                            format!(
                                "{a}: at most one SNAT address per family, of a family that has VIPs"
                            ),
                        ));
                    }
                }
            }
        }
        let snat_ip = snat4
            .or(vips.first().map(|v| v.addr))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let snat_ip6 = snat6.or(vips6.first().map(|v| v.addr));
        let snat_ports = match self.snat_ports.clone().or(file.snat_ports.clone()) {
            Some(s) => parse_port_range(&s)?,
            None => (DEFAULT_SNAT_PORT_MIN, DEFAULT_SNAT_PORT_MAX),
        };
        if mode == Mode::Fullnat
            && let Some(v) = vips
                .iter()
                .find(|v| v.addr == snat_ip && (snat_ports.0..=snat_ports.1).contains(&v.port))
        {
            return Err(ConfigError::invalid(
                "--snat-ports",
                format!("{}-{}", snat_ports.0, snat_ports.1),
                format!(
                    "contains the VIP port {} of the SNAT address {}",
                    v.port, snat_ip
                ),
            ));
        }
        if mode == Mode::Fullnat
            && let Some(v) = vips6.iter().find(|v| {
                Some(v.addr) == snat_ip6 && (snat_ports.0..=snat_ports.1).contains(&v.port)
            })
        {
            return Err(ConfigError::invalid(
                "--snat-ports",
                format!("{}-{}", snat_ports.0, snat_ports.1),
                format!(
                    "contains the VIP port {} of the SNAT address {}",
                    v.port, v.addr
                ),
            ));
        }
        Ok((mode, snat_ip, snat_ip6, snat_ports))
    }

    /// `--health*`, `--rise`, `--fall` and the TLS files of the checks.
    fn health_section(&self, file: &FileConfig) -> Result<HealthConfig, ConfigError> {
        let kind = self.health.or(file.health).unwrap_or_default();
        let path = self
            .health_path
            .clone()
            .or(file.health_path.clone())
            .unwrap_or_else(|| "/readyz".into());
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "--health-path",
                &path,
                "must start with / and contain no spaces",
            ));
        }
        let interval = match self
            .health_interval
            .clone()
            .or(file.health_interval.clone())
        {
            Some(s) => parse_duration("--health-interval", &s)?,
            None => Duration::from_millis(200),
        };
        let timeout = match self.health_timeout.clone().or(file.health_timeout.clone()) {
            Some(s) => parse_duration("--health-timeout", &s)?,
            None => Duration::from_millis(300),
        };
        let rise = self.rise.or(file.rise).unwrap_or(2);
        let fall = self.fall.or(file.fall).unwrap_or(3);
        if rise == 0 {
            return Err(ConfigError::invalid("--rise", rise, "must be at least 1"));
        }
        if fall == 0 {
            return Err(ConfigError::invalid("--fall", fall, "must be at least 1"));
        }
        let passive_errors = self.passive_errors.or(file.passive_errors).unwrap_or(3);
        if passive_errors > MAX_PASSIVE_ERRORS {
            return Err(ConfigError::invalid(
                "--passive-errors",
                passive_errors,
                format!("must be 0 (off) to {MAX_PASSIVE_ERRORS}"),
            ));
        }
        let passive_timeout = match self
            .passive_timeout
            .clone()
            .or(file.passive_timeout.clone())
        {
            Some(s) => {
                let t = parse_duration("--passive-timeout", &s)?;
                if !(Duration::from_millis(100)..=Duration::from_secs(10)).contains(&t) {
                    return Err(ConfigError::invalid(
                        "--passive-timeout",
                        s,
                        "must be between 100ms and 10s",
                    ));
                }
                t
            }
            None => Duration::from_millis(300),
        };
        let ca_file = self.ca_file.clone().or(file.ca_file.clone());
        let cert_file = self.cert_file.clone().or(file.cert_file.clone());
        let key_file = self.key_file.clone().or(file.key_file.clone());
        if cert_file.is_some() != key_file.is_some() {
            let (field, value) = match &cert_file {
                Some(c) => ("--cert-file", c.display().to_string()),
                None => (
                    "--key-file",
                    key_file
                        .as_ref()
                        .map(|k| k.display().to_string())
                        .unwrap_or_default(),
                ),
            };
            return Err(ConfigError::invalid(
                field,
                value,
                "--cert-file and --key-file go together",
            ));
        }
        for (field, p) in [
            ("--ca-file", &ca_file),
            ("--cert-file", &cert_file),
            ("--key-file", &key_file),
        ] {
            if let Some(p) = p
                && !p.is_file()
            {
                return Err(ConfigError::invalid(field, p.display(), "no such file"));
            }
        }
        let insecure_skip_verify =
            self.insecure_skip_verify || file.insecure_skip_verify.unwrap_or(false);
        Ok(HealthConfig {
            kind,
            path,
            interval,
            timeout,
            rise,
            fall,
            passive_errors,
            passive_timeout,
            ca_file,
            cert_file,
            key_file,
            insecure_skip_verify,
        })
    }

    /// `--metrics-addr`.
    fn metrics_section(&self, file: &FileConfig) -> Result<SocketAddr, ConfigError> {
        let metrics_addr = self
            .metrics_addr
            .clone()
            .or(file.metrics_addr.clone())
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.into());
        metrics_addr
            .parse()
            .map_err(|e| ConfigError::invalid("--metrics-addr", &metrics_addr, e))
    }

    /// `--table-size` (a prime) and `--conntrack-size`.
    fn tables_section(&self, file: &FileConfig) -> Result<(u32, u32), ConfigError> {
        let table_size = self
            .table_size
            .or(file.table_size)
            .unwrap_or(DEFAULT_RING_SIZE);
        if !(2..=MAX_RING_SIZE).contains(&table_size) || !lb_common::prime::is_prime(table_size) {
            return Err(ConfigError::invalid(
                "--table-size",
                table_size,
                format!("must be a prime up to {MAX_RING_SIZE}"),
            ));
        }
        let conntrack_size = self
            .conntrack_size
            .or(file.conntrack_size)
            .unwrap_or(DEFAULT_CONNTRACK_SIZE);
        if !(1024..=16 << 20).contains(&conntrack_size) {
            return Err(ConfigError::invalid(
                "--conntrack-size",
                conntrack_size,
                "must be between 1024 and 16777216",
            ));
        }
        Ok((table_size, conntrack_size))
    }

    /// How the VIP is announced: `--vrrp-*`, `--announce`, `--route-table`.
    fn announce_section(
        &self,
        file: &FileConfig,
        mode: Mode,
        snat_ip: Ipv4Addr,
        vips: &[VipSpec],
    ) -> Result<(Option<vrrp::VrrpSettings>, Announce, u32), ConfigError> {
        let vrrp = vrrp::VrrpSettings::resolve(vrrp::VrrpInput {
            vrid: self.vrrp_vrid.or(file.vrrp_vrid),
            priority: self.vrrp_priority.or(file.vrrp_priority),
            advert_int: self
                .vrrp_advert_int
                .clone()
                .or(file.vrrp_advert_int.clone()),
            preempt: self.vrrp_preempt.or(file.vrrp_preempt),
            peers: pick_list(&self.vrrp_peers, file.vrrp_peers.clone()),
            health_penalty: self.vrrp_health_penalty.or(file.vrrp_health_penalty),
            version: self.vrrp_version.or(file.vrrp_version),
            auth_type: self.vrrp_auth_type.clone().or(file.vrrp_auth_type.clone()),
            auth_pass: self.vrrp_auth_pass.clone().or(file.vrrp_auth_pass.clone()),
            track_interfaces: pick_list(
                &self.vrrp_track_interfaces,
                file.vrrp_track_interfaces.clone(),
            ),
            notify_exec: self.notify_exec.clone().or(file.notify_exec.clone()),
            notify_fifo: self.notify_fifo.clone().or(file.notify_fifo.clone()),
            track_ip: self.vrrp_track_ip.clone().or(file.vrrp_track_ip.clone()),
            track_ip_weight: self.vrrp_track_ip_weight.or(file.vrrp_track_ip_weight),
            track_ip_fall: self.vrrp_track_ip_fall.or(file.vrrp_track_ip_fall),
        })?;
        let announce = self.announce.or(file.announce).unwrap_or_default();
        if announce == Announce::None && vrrp.is_some() {
            return Err(ConfigError::invalid(
                "--announce",
                "none",
                "VRRP (--vrrp-vrid) announces the VIP; per-node mode does not",
            ));
        }
        let route_table = check_routed(
            announce,
            self.route_table.or(file.route_table),
            vrrp.is_some(),
            mode,
            snat_ip,
            vips,
        )?;
        Ok((vrrp, announce, route_table))
    }
}

/// Routed mode's rules: a private table (not unspec, default, main or local); no VRRP (the
/// router picks the nodes); in full NAT a SNAT address of the node's own rather than a VIP,
/// since the masters' replies to a VIP would reach whichever node ECMP picks for them.
pub(super) fn check_routed(
    announce: Announce,
    table: Option<u32>,
    vrrp: bool,
    mode: Mode,
    snat_ip: Ipv4Addr,
    vips: &[VipSpec],
) -> Result<u32, ConfigError> {
    if announce != Announce::Route {
        if let Some(t) = table {
            return Err(ConfigError::invalid(
                "--route-table",
                t,
                "only used with --announce route",
            ));
        }
        return Ok(DEFAULT_ROUTE_TABLE);
    }
    if vrrp {
        return Err(ConfigError::invalid(
            "--announce",
            "route",
            "routed mode runs no VRRP: drop the --vrrp-* settings (--vrrp-vrid)",
        ));
    }
    let table = table.unwrap_or(DEFAULT_ROUTE_TABLE);
    if matches!(table, 0 | 253..=255) {
        return Err(ConfigError::invalid(
            "--route-table",
            table,
            "0, 253 (default), 254 (main) and 255 (local) are the kernel's: pick a table of its own, e.g. 200",
        ));
    }
    if mode == Mode::Fullnat && vips.iter().any(|v| v.addr == snat_ip) {
        return Err(ConfigError::invalid(
            "--snat-ip",
            snat_ip,
            "routed full NAT needs each node's own address as --snat-ip (replies to a VIP would reach any node)",
        ));
    }
    Ok(table)
}

/// The host of a controlPlaneEndpoint (`NAME[:PORT]`, `ADDR`, `[ADDR6]:PORT`): an address
/// as printed, or a DNS name in lower case; `None` for anything else.
pub fn control_plane_host(endpoint: &str) -> Option<String> {
    if let Ok(ip) = endpoint.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    if let Ok(sa) = endpoint.parse::<SocketAddr>() {
        return Some(sa.ip().to_string());
    }
    let host = match endpoint.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().ok()?;
            host
        }
        None => endpoint,
    };
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (host.len() <= 253 && host.split('.').all(label)).then(|| host.to_ascii_lowercase())
}

pub(super) fn pick_list(cli: &[String], file: Option<Vec<String>>) -> Vec<String> {
    if cli.is_empty() {
        file.unwrap_or_default()
    } else {
        cli.to_vec()
    }
}

/// The family rules beyond the addresses: VRRPv2 (and PASS) exists only for IPv4; unicast
/// peers must include one of each family that has VIPs; routed mode announces IPv4 /32
/// routes only.
pub(super) fn check_family_rules(
    vrrp: Option<&vrrp::VrrpSettings>,
    announce: Announce,
    vips: &[VipSpec],
    vips6: &[VipSpec6],
) -> Result<(), ConfigError> {
    let Some(first6) = vips6.first() else {
        return Ok(());
    };
    let vip6 = SocketAddrV6::new(first6.addr, first6.port, 0, 0).to_string();
    if announce == Announce::Route {
        return Err(ConfigError::invalid(
            "--vip",
            vip6,
            "routed mode (--announce route) announces IPv4 routes only: serve IPv6 VIPs with --announce arp (NDP) or none",
        ));
    }
    let Some(v) = vrrp else {
        return Ok(());
    };
    if v.version == crate::wire::vrrp::Version::V2 {
        return Err(ConfigError::invalid(
            "--vrrp-version",
            2,
            format!("VRRPv2 is IPv4 only; the IPv6 VIP {vip6} needs VRRPv3 (--vrrp-version 3)"),
        ));
    }
    if !v.peers.is_empty() {
        for (family, has_vips, is) in [("IPv4", !vips.is_empty(), true), ("IPv6", true, false)] {
            if has_vips && !v.peers.iter().any(|p| p.is_ipv4() == is) {
                return Err(ConfigError::invalid(
                    "--vrrp-peer",
                    v.peers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    format!(
                        "no {family} peer for the {family} VIPs (each family runs its own VRRP instance)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Most failed handshakes in a row `--passive-errors` may ask for.
pub const MAX_PASSIVE_ERRORS: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthKind, args::RunArgs};

    fn args() -> RunArgs {
        RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["192.0.2.100".into()],
            backends: vec!["192.0.2.11".into(), "192.0.2.12:6444@2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn services_with_vrrp_need_an_ipv4_vip_to_follow() {
        let v6_only = |vrid: Option<u32>| RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["[2001:db8::100]:6443".into()],
            backends: vec!["[2001:db8::11]:6443".into()],
            services: true,
            services_pools: vec!["2001:db8:5::/120".into()],
            services_kubeconfig: Some("/etc/kubernetes/admin.conf".into()),
            vrrp_vrid: vrid,
            ..Default::default()
        };
        let e = v6_only(Some(51)).resolve().unwrap_err().to_string();
        assert!(e.contains("--services") && e.contains("IPv4 --vip"), "{e}");
        // Without VRRP (every node announces) it stands; with an IPv4 VIP too.
        assert!(v6_only(None).resolve().is_ok());
        let mut a = v6_only(Some(51));
        a.vips.push("192.0.2.100".into());
        a.backends.push("192.0.2.11".into());
        assert!(a.resolve().is_ok(), "{:?}", a.resolve().err());
    }

    #[test]
    fn sync_needs_vrrp_and_a_private_key_file_and_takes_the_vrrp_peers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xvip-cfg-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("sync.key");
        std::fs::write(&key, [3u8; 40]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let with = |vrid: Option<u32>| RunArgs {
            sync_key_file: Some(key.clone()),
            vrrp_vrid: vrid,
            vrrp_peers: vrid.map(|_| "192.0.2.3".into()).into_iter().collect(),
            ..args()
        };
        let e = with(None).resolve().unwrap_err().to_string();
        assert!(
            e.contains("--sync-key-file") && e.contains("--vrrp-vrid"),
            "{e}"
        );
        let e = with(Some(51)).resolve().unwrap_err().to_string();
        assert!(
            e.contains(&key.display().to_string()) && e.contains("0640"),
            "{e}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = with(Some(51)).resolve().unwrap().sync.expect("sync on");
        assert_eq!(s.peers, vec![std::net::Ipv4Addr::new(192, 0, 2, 3)]);
        assert!(
            !format!("{s:?}").contains("[3, 3"),
            "the key is never printed"
        );
        assert_eq!(args().resolve().unwrap().sync, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn field_of(e: ConfigError) -> &'static str {
        match e {
            ConfigError::Invalid { field, .. } | ConfigError::Missing { field, .. } => field,
            ConfigError::File { .. } => "file",
        }
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let s = args().resolve().unwrap();
        assert_eq!(
            s.vips,
            vec![VipSpec {
                addr: Ipv4Addr::new(192, 0, 2, 100),
                port: 6443
            }]
        );
        assert_eq!(
            s.backends[0],
            BackendSpec {
                addr: "192.0.2.11:6443".parse().unwrap(),
                weight: 1,
                backup: false
            }
        );
        assert_eq!(
            s.backends[1],
            BackendSpec {
                addr: "192.0.2.12:6444".parse().unwrap(),
                weight: 2,
                backup: false
            }
        );
        assert_eq!(s.snat_ip, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(s.health.kind, HealthKind::Https);
        assert_eq!(s.health.path, "/readyz");
        assert_eq!(s.health.interval, Duration::from_millis(200));
        assert_eq!(s.table_size, 65537);
        assert_eq!(s.mode, Mode::Fullnat);
    }

    fn v6_args() -> RunArgs {
        RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["[2001:db8::100]:6443".into()],
            backends: vec!["[2001:db8::11]:6443".into(), "2001:db8::12@2".into()],
            ..Default::default()
        }
    }

    fn invalid(e: ConfigError) -> (&'static str, String, String) {
        match e {
            ConfigError::Invalid {
                field,
                value,
                reason,
            } => (field, value, reason),
            other => panic!("not Invalid: {other:?}"),
        }
    }

    #[test]
    fn ipv6_vips_and_backends_parse_bracketed_and_bare() {
        let s = v6_args().resolve().unwrap();
        assert!(s.vips.is_empty() && s.backends.is_empty());
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        assert_eq!(
            s.vips6,
            vec![VipSpec6 {
                addr: vip,
                port: 6443
            }]
        );
        assert_eq!(
            s.backends6,
            vec![
                BackendSpec6 {
                    addr: "[2001:db8::11]:6443".parse().unwrap(),
                    weight: 1,
                    backup: false
                },
                BackendSpec6 {
                    addr: "[2001:db8::12]:6443".parse().unwrap(),
                    weight: 2,
                    backup: false
                },
            ]
        );
        assert_eq!(s.snat_ip6, Some(vip));
        assert_eq!(s.snat_ip, Ipv4Addr::UNSPECIFIED);
        for (given, want) in [
            ("2001:db8::100", "[2001:db8::100]:6443"),
            ("[2001:db8::100]", "[2001:db8::100]:6443"),
            ("[2001:db8::100]:443", "[2001:db8::100]:443"),
            ("192.0.2.1", "192.0.2.1:6443"),
            ("192.0.2.1:443", "192.0.2.1:443"),
        ] {
            assert_eq!(parse_vip_addr(given).unwrap().to_string(), want, "{given}");
        }
        assert_eq!(
            parse_backend("[2001:db8::11]:6444@3").unwrap(),
            ("[2001:db8::11]:6444".parse().unwrap(), 3, false)
        );
    }

    #[test]
    fn a_backup_role_follows_its_backend_in_flags_env_and_toml() {
        // clap and XVIP_BACKENDS split `192.0.2.13,backup` at the comma.
        let mut a = args();
        a.backends.extend(["192.0.2.13@2".into(), "backup".into()]);
        let s = a.resolve().unwrap();
        let roles: Vec<(String, u32, bool)> = s
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight, b.backup))
            .collect();
        assert_eq!(
            roles,
            [
                ("192.0.2.11:6443".into(), 1, false),
                ("192.0.2.12:6444".into(), 2, false),
                ("192.0.2.13:6443".into(), 2, true)
            ]
        );
        // TOML keeps the item whole; IPv6 alike.
        let mut a = v6_args();
        a.backends.push("[2001:db8::13]:6443, backup".into());
        assert!(a.resolve().unwrap().backends6[2].backup);
    }

    #[test]
    fn passive_health_settings_default_parse_and_bad_values_are_named() {
        let h = args().resolve().unwrap().health;
        assert_eq!(
            (h.passive_errors, h.passive_timeout),
            (3, Duration::from_millis(300))
        );
        let mut a = args();
        a.passive_errors = Some(0);
        a.passive_timeout = Some("2s".into());
        let h = a.resolve().unwrap().health;
        assert_eq!(
            (h.passive_errors, h.passive_timeout),
            (0, Duration::from_secs(2))
        );
        for (errors, timeout, field, value) in [
            (Some(1001), None, "--passive-errors", "1001"),
            (None, Some("50ms"), "--passive-timeout", "50ms"),
            (None, Some("11s"), "--passive-timeout", "11s"),
            (None, Some("soon"), "--passive-timeout", "soon"),
        ] {
            let mut a = args();
            a.passive_errors = errors;
            a.passive_timeout = timeout.map(Into::into);
            let (f, v, _) = invalid(a.resolve().unwrap_err());
            assert_eq!((f, v.as_str()), (field, value));
        }
    }

    #[test]
    fn bad_backup_roles_are_named() {
        let mut a = args();
        a.backends.insert(0, "backup".into());
        let (field, value, reason) = invalid(a.resolve().unwrap_err());
        assert_eq!((field, value.as_str()), ("--backend", "backup"));
        assert!(reason.contains("needs a backend before it"), "{reason}");
        let mut a = args();
        a.backends.push("192.0.2.13,standby".into());
        let (_, value, reason) = invalid(a.resolve().unwrap_err());
        assert_eq!(value, "192.0.2.13,standby");
        assert!(reason.contains("'standby' is not 'backup'"), "{reason}");
        let mut a = args();
        a.backends = vec!["192.0.2.11,backup".into(), "192.0.2.12,backup".into()];
        let (_, value, reason) = invalid(a.resolve().unwrap_err());
        assert_eq!(value, "192.0.2.11:6443");
        assert!(
            reason.contains("at least one must be a primary"),
            "{reason}"
        );
    }

    #[test]
    fn malformed_ipv6_forms_are_named() {
        for bad in [
            "[2001:db8::100",
            "[2001:db8::100]6443",
            "[192.0.2.1]:6443",
            "[2001:db8::100]:0",
            "[2001:db8::zz]:6443",
            "ff02::1",
            "::",
        ] {
            let (field, value, _) = invalid(parse_vip_addr(bad).unwrap_err());
            assert_eq!((field, value.as_str()), ("--vip", bad));
        }
    }

    #[test]
    fn dual_stack_splits_vips_backends_and_snat_addresses_by_family() {
        let mut a = args();
        a.vips.push("[2001:db8::100]:6443".into());
        a.backends.push("[2001:db8::11]:6443".into());
        a.snat_ip = Some("192.0.2.2, 2001:db8::2".into());
        let s = a.resolve().unwrap();
        assert_eq!((s.vips.len(), s.vips6.len()), (1, 1));
        assert_eq!((s.backends.len(), s.backends6.len()), (2, 1));
        assert_eq!(s.snat_ip, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(s.snat_ip6, Some("2001:db8::2".parse().unwrap()));
        // Two of one family are refused.
        let mut a = args();
        a.vips.push("2001:db8::100".into());
        a.backends.push("2001:db8::11".into());
        a.snat_ip = Some("192.0.2.2,192.0.2.3".into());
        assert_eq!(invalid(a.resolve().unwrap_err()).0, "--snat-ip");
    }

    #[test]
    fn a_backend_of_the_other_family_is_refused_naming_it() {
        let mut a = args();
        a.backends.push("[2001:db8::11]:6443".into());
        let (field, value, reason) = invalid(a.resolve().unwrap_err());
        assert_eq!(
            (field, value.as_str()),
            ("--backend", "[2001:db8::11]:6443")
        );
        assert!(reason.contains("every VIP is IPv4"), "{reason}");
        let mut a = v6_args();
        a.backends.push("192.0.2.11".into());
        let (field, value, _) = invalid(a.resolve().unwrap_err());
        assert_eq!((field, value.as_str()), ("--backend", "192.0.2.11"));
        // A family's VIP without a backend of its family.
        let mut a = args();
        a.vips.push("[2001:db8::100]:6443".into());
        let (field, value, reason) = invalid(a.resolve().unwrap_err());
        assert_eq!((field, value.as_str()), ("--vip", "[2001:db8::100]:6443"));
        assert!(reason.contains("no IPv6 backend"), "{reason}");
    }

    #[test]
    fn ipv6_vips_refuse_vrrpv2_routed_mode_and_peers_of_one_family() {
        let mut a = v6_args();
        a.vrrp_vrid = Some(51);
        a.vrrp_version = Some(2);
        assert_eq!(invalid(a.resolve().unwrap_err()).0, "--vrrp-version");
        let mut a = v6_args();
        a.announce = Some(Announce::Route);
        assert_eq!(invalid(a.resolve().unwrap_err()).0, "--vip");
        let mut a = v6_args();
        a.vrrp_vrid = Some(51);
        a.vrrp_peers = vec!["192.0.2.3".into()];
        assert_eq!(invalid(a.resolve().unwrap_err()).0, "--vrrp-peer");
        a.vrrp_peers = vec!["fe80::3".into()];
        let v = a.resolve().unwrap().vrrp.unwrap();
        assert_eq!(v.peers, vec!["fe80::3".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn every_bad_value_is_named_in_the_error() {
        type Case = (fn(&mut RunArgs), &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (
                |a| a.vips = vec!["192.0.2.300".into()],
                "--vip",
                "192.0.2.300",
            ),
            (
                |a| a.vips = vec!["192.0.2.1:0".into()],
                "--vip",
                "192.0.2.1:0",
            ),
            (
                |a| a.backends = vec!["10.0.0.1:99999".into()],
                "--backend",
                "10.0.0.1:99999",
            ),
            (
                |a| a.backends = vec!["nonsense".into()],
                "--backend",
                "nonsense",
            ),
            (
                |a| a.backends = vec!["192.0.2.5@x".into()],
                "--backend",
                "192.0.2.5@x",
            ),
            (
                |a| a.backends = vec!["192.0.2.5".into(), "192.0.2.5".into()],
                "--backend",
                "192.0.2.5:6443",
            ),
            (|a| a.snat_ip = Some("1.2.3".into()), "--snat-ip", "1.2.3"),
            (
                |a| a.snat_ports = Some("5000-100".into()),
                "--snat-ports",
                "5000-100",
            ),
            (
                |a| a.snat_ports = Some("6000-7000".into()),
                "--snat-ports",
                "6000-7000",
            ),
            (
                |a| a.health_interval = Some("fast".into()),
                "--health-interval",
                "fast",
            ),
            (
                |a| a.health_timeout = Some("0ms".into()),
                "--health-timeout",
                "0ms",
            ),
            (
                |a| a.health_path = Some("readyz".into()),
                "--health-path",
                "readyz",
            ),
            (|a| a.rise = Some(0), "--rise", "0"),
            (|a| a.fall = Some(0), "--fall", "0"),
            (|a| a.table_size = Some(65536), "--table-size", "65536"),
            (|a| a.conntrack_size = Some(10), "--conntrack-size", "10"),
            (
                |a| a.metrics_addr = Some("localhost".into()),
                "--metrics-addr",
                "localhost",
            ),
            (|a| a.interface = vec!["a/b".into()], "--interface", "a/b"),
            (
                |a| a.interface = vec!["eth0".into(), "eth0".into()],
                "--interface",
                "eth0",
            ),
            (
                |a| a.ca_file = Some("/nonexistent/ca.pem".into()),
                "--ca-file",
                "/nonexistent/ca.pem",
            ),
            (
                |a| a.cert_file = Some("/etc/hostname".into()),
                "--cert-file",
                "/etc/hostname",
            ),
        ];
        for (mutate, field, value) in cases {
            let mut a = args();
            mutate(&mut a);
            let err = a.resolve().expect_err(field);
            let msg = err.to_string();
            assert!(msg.contains(value), "{msg:?} should name {value:?}");
            assert_eq!(field_of(err), field, "{msg}");
        }
    }

    #[test]
    fn interfaces_repeat_on_the_command_line_and_as_a_toml_list() {
        let mut a = args();
        a.interface = vec!["eth0".into(), "eth1".into()];
        let s = a.resolve().unwrap();
        assert_eq!(s.interface, "eth0");
        assert_eq!(s.interfaces, ["eth0", "eth1"]);
        let dir = std::env::temp_dir().join(format!("xvip-ifaces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.toml");
        std::fs::write(&path, "interface = [\"eth2\", \"eth3\"]\n").unwrap();
        let mut a = args();
        a.interface = Vec::new();
        a.config = Some(path.clone());
        assert_eq!(a.resolve().unwrap().interfaces, ["eth2", "eth3"]);
        std::fs::write(&path, "interface = \"eth2\"\n").unwrap();
        assert_eq!(a.resolve().unwrap().interfaces, ["eth2"]);
        std::fs::remove_dir_all(&dir).unwrap();
        let mut a = args();
        a.interface = (0..=lb_common::MAX_INTERFACES)
            .map(|i| format!("eth{i}"))
            .collect();
        assert!(a.resolve().unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn attach_comes_from_the_flag_or_toml_defaults_to_xdp_and_tc_takes_one_interface() {
        use crate::config::Attach;
        assert_eq!(args().resolve().unwrap().attach, Attach::Xdp);
        let mut a = args();
        a.attach = Some(Attach::Auto);
        assert_eq!(a.resolve().unwrap().attach, Attach::Auto);
        let dir = std::env::temp_dir().join(format!("xvip-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.toml");
        std::fs::write(&path, "attach = \"tc\"\n").unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        assert_eq!(a.resolve().unwrap().attach, Attach::Tc);
        std::fs::write(&path, "attach = \"ebpf\"\n").unwrap();
        assert!(a.resolve().is_err(), "an unknown attach mode is refused");
        std::fs::remove_dir_all(&dir).unwrap();
        for attach in [Attach::Tc, Attach::Auto] {
            let mut a = args();
            a.attach = Some(attach);
            a.interface = vec!["eth0".into(), "eth1".into()];
            let err = a.resolve().unwrap_err();
            assert_eq!(field_of(err), "--attach");
        }
    }

    #[test]
    fn missing_required_settings_are_named() {
        let mut a = args();
        a.interface = Vec::new();
        assert_eq!(field_of(a.resolve().unwrap_err()), "--interface");
        let mut a = args();
        a.backends.clear();
        assert_eq!(field_of(a.resolve().unwrap_err()), "--backend");
        let mut a = args();
        a.vips.clear();
        assert_eq!(field_of(a.resolve().unwrap_err()), "--vip");
    }

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("xvip-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xvip.toml");
        std::fs::write(
            &path,
            "interface = \"eth9\"\nvips = [\"198.51.100.1\"]\nbackends = [\"198.51.100.2\"]\nfall = 5\nrise = 4\nmode = \"dnat\"\n",
        )
        .unwrap();
        let a = RunArgs {
            config: Some(path.clone()),
            rise: Some(7),
            ..Default::default()
        };
        let s = a.resolve().unwrap();
        assert_eq!(s.interface, "eth9");
        assert_eq!(s.health.fall, 5);
        assert_eq!(s.health.rise, 7);
        assert_eq!(s.mode, Mode::Dnat);
        assert_eq!(s.vips[0].addr, Ipv4Addr::new(198, 51, 100, 1));
        let a = RunArgs {
            config: Some(path.clone()),
            backends: vec!["198.51.100.3".into()],
            ..Default::default()
        };
        assert_eq!(
            a.resolve().unwrap().backends[0].addr.ip(),
            &Ipv4Addr::new(198, 51, 100, 3)
        );

        std::fs::write(&path, "interfaces = \"eth0\"\n").unwrap();
        let err = RunArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("interfaces"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod routed_tests {
    use super::*;
    use crate::config::args::RunArgs;

    fn routed() -> RunArgs {
        RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["192.0.2.100".into()],
            backends: vec!["192.0.2.11".into()],
            announce: Some(Announce::Route),
            snat_ip: Some("192.0.2.2".into()),
            snat_ports: Some("20000-32767".into()),
            ..Default::default()
        }
    }

    fn refusal(a: RunArgs) -> (&'static str, String) {
        match a.resolve().unwrap_err() {
            e @ ConfigError::Invalid { field, .. } => (field, e.to_string()),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn routed_mode_defaults_to_table_200_and_takes_another() {
        let s = routed().resolve().unwrap();
        assert_eq!((s.announce, s.route_table), (Announce::Route, 200));
        let s = RunArgs {
            route_table: Some(1000),
            ..routed()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.route_table, 1000);
    }

    #[test]
    fn routed_mode_with_vrrp_is_refused_naming_both() {
        let (field, msg) = refusal(RunArgs {
            vrrp_vrid: Some(7),
            ..routed()
        });
        assert_eq!(field, "--announce");
        assert!(
            msg.contains("route") && msg.contains("--vrrp-vrid"),
            "{msg}"
        );
    }

    #[test]
    fn the_kernels_own_tables_are_refused() {
        for t in [0, 253, 254, 255] {
            let (field, msg) = refusal(RunArgs {
                route_table: Some(t),
                ..routed()
            });
            assert_eq!(field, "--route-table");
            assert!(msg.contains(&format!("'{t}'")), "{msg}");
        }
    }

    #[test]
    fn a_route_table_without_routed_mode_is_refused() {
        let (field, _) = refusal(RunArgs {
            announce: None,
            route_table: Some(200),
            ..routed()
        });
        assert_eq!(field, "--route-table");
    }

    #[test]
    fn routed_full_nat_needs_a_snat_address_that_is_not_a_vip() {
        let (field, msg) = refusal(RunArgs {
            snat_ip: None,
            ..routed()
        });
        assert_eq!(field, "--snat-ip");
        assert!(msg.contains("192.0.2.100"), "{msg}");
        // DNAT has no SNAT address.
        RunArgs {
            snat_ip: None,
            mode: Some(Mode::Dnat),
            ..routed()
        }
        .resolve()
        .unwrap();
    }

    #[test]
    fn routed_mode_and_its_table_come_from_the_file_too() {
        let dir = std::env::temp_dir().join(format!("xvip-routed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xvip.toml");
        std::fs::write(
            &path,
            "interface = \"eth0\"\nvips = [\"192.0.2.100\"]\nbackends = [\"192.0.2.11\"]\nannounce = \"route\"\nroute_table = 300\nsnat_ip = \"192.0.2.2\"\n",
        )
        .unwrap();
        let s = RunArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!((s.announce, s.route_table), (Announce::Route, 300));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_control_plane_endpoint_keeps_its_host_and_refuses_what_is_no_name() {
        for (given, host) in [
            ("K8s.Example.com:6443", "k8s.example.com"),
            ("cp", "cp"),
            ("192.0.2.100:6443", "192.0.2.100"),
            ("[2001:db8::64]:6443", "2001:db8::64"),
            ("2001:db8::64", "2001:db8::64"),
        ] {
            assert_eq!(control_plane_host(given).as_deref(), Some(host), "{given}");
        }
        for bad in ["", "a..b", "-a.b", "a b", "name:port", "name:70000"] {
            assert_eq!(control_plane_host(bad), None, "{bad}");
        }
        let mut a = RunArgs {
            interface: vec!["eth0".into()],
            vips: vec!["192.0.2.100".into()],
            backends: vec!["192.0.2.11".into()],
            control_plane_endpoint: Some("cp.example:6443".into()),
            ..Default::default()
        };
        assert_eq!(
            a.resolve().unwrap().control_plane_endpoint.as_deref(),
            Some("cp.example")
        );
        a.control_plane_endpoint = Some("bad name:6443".into());
        let e = a.resolve().unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field: "--control-plane-endpoint", value, .. } if value == "bad name:6443"),
            "{e:?}"
        );
    }
}
