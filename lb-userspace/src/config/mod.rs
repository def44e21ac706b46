//! Configuration: the `xvip run` flags (`args`), their environment variables and the
//! optional TOML file (`file`), merged in that order of precedence by the section resolvers
//! (`resolve`, with the value parsers of `parse`) and validated into [`Settings`]; `vrrp`
//! and `sync` the VRRP and conntrack-sync sections; `reload` what a SIGHUP cannot apply.
//! Here: the defaults, the error, the setting types and [`Settings`]. Nearly a leaf: of the
//! crate it imports only the ground floor `wire` (the protocols' vocabulary and keys).

pub mod args;
pub mod file;
pub mod parse;
pub mod reload;
pub mod resolve;
pub mod services;
pub mod sync;
pub mod vrrp;

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    path::PathBuf,
    time::Duration,
};

use clap::ValueEnum;
use serde::Deserialize;

/// Default address of the metrics, status and health endpoint (loopback only).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9106";
/// Default bpffs directory under which each interface gets its pins.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/xvip";
/// Default interval between gratuitous ARP refreshes.
pub const DEFAULT_GARP_INTERVAL: Duration = Duration::from_secs(10);
/// Default routing table of `--route-table` (unused by the kernel and by common tools).
pub const DEFAULT_ROUTE_TABLE: u32 = 200;
/// Default conntrack capacity (flows).
pub const DEFAULT_CONNTRACK_SIZE: u32 = lb_common::DEFAULT_CONNTRACK_SIZE;

/// A configuration error: which setting, the bad value, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("invalid {field} '{value}': {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A required setting was given nowhere.
    #[error("missing {field}: {hint}")]
    Missing {
        field: &'static str,
        hint: &'static str,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
}

impl ConfigError {
    fn invalid(field: &'static str, value: impl ToString, reason: impl ToString) -> Self {
        Self::Invalid {
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Translation mode of the VIPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One-armed: source and destination rewritten; masters need no configuration.
    #[default]
    Fullnat,
    /// Destination only: the LB must be on the return path.
    Dnat,
}

/// Kind of backend health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// HTTPS GET of `--health-path` (default `/readyz`), 200 means healthy.
    #[default]
    Https,
    /// TCP connect.
    Tcp,
    /// No checks: every backend is always healthy.
    None,
}

/// How the VIPs are announced to the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Announce {
    /// Answer ARP for the VIPs and send gratuitous ARP (with VRRP: only while master).
    #[default]
    Arp,
    /// Never: per-node mode, where only processes on this node use the VIP.
    None,
    /// A /32 route per VIP in `--route-table` while this node can serve, for the node's
    /// BGP daemon to export (routed, active-active behind ECMP; no ARP, no VRRP).
    Route,
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Native (driver) mode, falling back to generic with a log line.
    #[default]
    Auto,
    /// Native only: fail if the driver lacks XDP support.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// Where the program is attached (`--attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    /// XDP (`--xdp-mode` says how); another XDP program on the interface is refused.
    #[default]
    Xdp,
    /// tc ingress (tcx where the kernel has it, else a clsact filter), beside whatever
    /// holds XDP.
    Tc,
    /// XDP when no other XDP program is on the interface, else tc beside it.
    Auto,
}

impl Attach {
    /// The name used on the command line and in the status.
    pub fn name(self) -> &'static str {
        match self {
            Attach::Xdp => "xdp",
            Attach::Tc => "tc",
            Attach::Auto => "auto",
        }
    }
}

/// One VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// One IPv6 VIP (`--vip '[2001:db8::100]:6443'` or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipSpec6 {
    pub addr: Ipv6Addr,
    pub port: u16,
}

/// One IPv6 backend as configured (`--backend '[2001:db8::11]:6443@2'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec6 {
    pub addr: SocketAddrV6,
    /// Relative weight; 0 drains (no new flows, existing ones kept).
    pub weight: u32,
    /// Held back while any primary of its family is healthy (`ADDR,backup`, haproxy's
    /// `backup`): in the table only when every primary is down.
    pub backup: bool,
}

/// One backend as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddrV4,
    /// Relative weight; 0 drains (no new flows, existing ones kept).
    pub weight: u32,
    /// Held back while any primary of its family is healthy (`ADDR,backup`, haproxy's
    /// `backup`): in the table only when every primary is down.
    pub backup: bool,
}

/// Validated health-check settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Failed handshakes in a row that take a backend out (passive health; 0: off).
    pub passive_errors: u32,
    /// Time a new flow's SYN may wait for the backend's answer.
    pub passive_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// Everything `xvip run` needs, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The first interface (VRRP, routed mode, the pins' key).
    pub interface: String,
    /// Every interface to attach to, the first one included, in order.
    pub interfaces: Vec<String>,
    /// The IPv4 VIPs (empty when every VIP is IPv6).
    pub vips: Vec<VipSpec>,
    /// The IPv4 backends: those of the IPv4 VIPs.
    pub backends: Vec<BackendSpec>,
    /// The IPv6 VIPs, served beside the IPv4 ones (dual stack) or alone. A VIP's backends
    /// are of its family: the IPv6 VIPs balance over [`Settings::backends6`].
    pub vips6: Vec<VipSpec6>,
    /// The IPv6 backends: those of the IPv6 VIPs.
    pub backends6: Vec<BackendSpec6>,
    pub mode: Mode,
    /// Full NAT source of the IPv4 VIPs (unspecified when there is none).
    pub snat_ip: Ipv4Addr,
    /// Full NAT source of the IPv6 VIPs: the IPv6 `--snat-ip`, else the first IPv6 VIP
    /// (`None` without IPv6 VIPs).
    pub snat_ip6: Option<Ipv6Addr>,
    pub snat_ports: (u16, u16),
    pub health: HealthConfig,
    pub metrics_addr: SocketAddr,
    pub xdp_mode: XdpAttachMode,
    /// `--attach`: XDP, tc or the choice at startup.
    pub attach: Attach,
    pub keep_attached: bool,
    pub table_size: u32,
    pub conntrack_size: u32,
    pub garp_interval: Duration,
    pub pin_root: PathBuf,
    pub icmp_echo: bool,
    /// Balance this node's own connect()s to the VIPs with the cgroup hook.
    pub local_connect: bool,
    /// VIP failover, when `--vrrp-vrid` is given.
    pub vrrp: Option<vrrp::VrrpSettings>,
    /// Kubeconfig to discover masters with (`--discover-from-kubeconfig`).
    pub discover_from_kubeconfig: Option<PathBuf>,
    /// Conntrack sync with the VRRP peers (`--sync-key-file`).
    pub sync: Option<sync::SyncSettings>,
    /// kubeadm's controlPlaneEndpoint without its port (`--control-plane-endpoint`): a DNS
    /// name or an address the masters' certificates must name (read by `xvip doctor` only).
    pub control_plane_endpoint: Option<String>,
    /// Whether the VIPs are announced (ARP, a route) or only used on this node.
    pub announce: Announce,
    /// Routing table of the VIP routes (`--announce route`).
    pub route_table: u32,
    /// Services of type LoadBalancer (`--services`).
    pub services: Option<services::ServicesSettings>,
}
