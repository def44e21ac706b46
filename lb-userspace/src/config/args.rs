//! `xvip run`'s flags and their environment variables (clap): every setting optional here;
//! what is unset comes from `--config`, then the defaults (`resolve`).

use std::path::PathBuf;

use clap::Args;

use super::vrrp;
use super::{Announce, Attach, HealthKind, Mode, XdpAttachMode};

/// `xvip run` and `xvip check-config` settings as given on the command line or in the
/// environment. Every field is optional here: unset ones come from `--config`, then defaults.
#[derive(Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// Interface to attach to and answer ARP on; repeat (or a comma list) for several:
    /// clients on one, masters behind another (the first also runs VRRP and routed mode).
    #[arg(long = "interface", env = "XVIP_INTERFACE", value_delimiter = ',')]
    pub interface: Vec<String>,
    /// Virtual IP, IPv4[:PORT], [IPv6]:PORT or a bare IPv6 (port 6443 by default); repeat
    /// for several, of either family (dual stack).
    #[arg(long = "vip", env = "XVIP_VIPS", value_delimiter = ',')]
    pub vips: Vec<String>,
    /// Backend, IP[:PORT][@WEIGHT], IPv6 as [IPv6]:PORT[@WEIGHT] (port 6443, weight 1 by
    /// default; weight 0 drains); of the family of the VIPs it serves.
    #[arg(long = "backend", env = "XVIP_BACKENDS", value_delimiter = ',')]
    pub backends: Vec<String>,
    /// fullnat (default) or dnat.
    #[arg(long, env = "XVIP_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// Source address of translated packets in fullnat mode, one per family as A[,B]
    /// (default: each family's first VIP).
    #[arg(long, env = "XVIP_SNAT_IP")]
    pub snat_ip: Option<String>,
    /// SNAT port range, MIN-MAX (default 20000-59999).
    #[arg(long, env = "XVIP_SNAT_PORTS")]
    pub snat_ports: Option<String>,
    /// Health check: https (default), tcp or none.
    #[arg(long, env = "XVIP_HEALTH", value_enum)]
    pub health: Option<HealthKind>,
    /// Path of the HTTPS check (default /readyz).
    #[arg(long, env = "XVIP_HEALTH_PATH")]
    pub health_path: Option<String>,
    /// Time between checks of one backend, e.g. 200ms.
    #[arg(long, env = "XVIP_HEALTH_INTERVAL")]
    pub health_interval: Option<String>,
    /// Time a check may take, e.g. 300ms.
    #[arg(long, env = "XVIP_HEALTH_TIMEOUT")]
    pub health_timeout: Option<String>,
    /// Consecutive successes that bring a backend back.
    #[arg(long, env = "XVIP_RISE")]
    pub rise: Option<u32>,
    /// Consecutive failures that take a backend out.
    #[arg(long, env = "XVIP_FALL")]
    pub fall: Option<u32>,
    /// Failed handshakes of live traffic in a row (SYN refused with a RST or unanswered)
    /// that take a backend out before its check fails; the check's rise brings it back
    /// (default 3; 0 turns passive health off).
    #[arg(long, env = "XVIP_PASSIVE_ERRORS")]
    pub passive_errors: Option<u32>,
    /// Time a backend has to answer a new flow's SYN before it counts as unanswered,
    /// e.g. 300ms (default: the check's default timeout; 100ms to 10s).
    #[arg(long, env = "XVIP_PASSIVE_TIMEOUT")]
    pub passive_timeout: Option<String>,
    /// CA bundle (PEM) to verify the API servers' certificates with.
    #[arg(long, env = "XVIP_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for clusters that refuse anonymous /readyz.
    #[arg(long, env = "XVIP_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) matching --cert-file.
    #[arg(long, env = "XVIP_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Do not verify the API servers' certificates even with --ca-file.
    #[arg(long, env = "XVIP_INSECURE_SKIP_VERIFY")]
    pub insecure_skip_verify: bool,
    /// Address of the metrics/status endpoint (default 127.0.0.1:9106).
    #[arg(long, env = "XVIP_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// TOML file with any of these settings (flags and environment win).
    #[arg(long, env = "XVIP_CONFIG")]
    pub config: Option<PathBuf>,
    /// XDP attach mode: auto (default), native or generic.
    #[arg(long, env = "XVIP_XDP_MODE", value_enum)]
    pub xdp_mode: Option<XdpAttachMode>,
    /// Where the program goes: xdp (default; another XDP program on the interface is
    /// refused), tc (tc ingress beside it) or auto (XDP when the interface is free, else tc).
    #[arg(long, env = "XVIP_ATTACH", value_enum)]
    pub attach: Option<Attach>,
    /// Leave the program attached on exit (flows keep being served by the pinned maps).
    #[arg(long, env = "XVIP_KEEP_ATTACHED")]
    pub keep_attached: bool,
    /// Maglev table size per VIP, a prime up to 65537 (default 65537).
    #[arg(long, env = "XVIP_TABLE_SIZE")]
    pub table_size: Option<u32>,
    /// Tracked flows (default 262144).
    #[arg(long, env = "XVIP_CONNTRACK_SIZE")]
    pub conntrack_size: Option<u32>,
    /// Interval between gratuitous ARP refreshes, e.g. 10s.
    #[arg(long, env = "XVIP_GARP_INTERVAL")]
    pub garp_interval: Option<String>,
    /// bpffs directory for pins (default /sys/fs/bpf/xvip).
    #[arg(long, env = "XVIP_PIN_ROOT")]
    pub pin_root: Option<PathBuf>,
    /// Do not answer ICMP echo requests to the VIPs.
    #[arg(long, env = "XVIP_NO_ICMP_ECHO")]
    pub no_icmp_echo: bool,
    /// Leave connect()s from this node's processes to the VIPs alone (by default a cgroup
    /// hook sends them straight to a healthy backend).
    #[arg(long, env = "XVIP_NO_LOCAL_CONNECT")]
    pub no_local_connect: bool,
    /// VRRP virtual router ID (1-255): fail the VIP over between xvip nodes (VRRPv3, or v2
    /// with --vrrp-version 2).
    #[arg(long, env = "XVIP_VRRP_VRID")]
    pub vrrp_vrid: Option<u32>,
    /// VRRP priority, 1-254 (default 100); the highest live node is master.
    #[arg(long, env = "XVIP_VRRP_PRIORITY")]
    pub vrrp_priority: Option<u32>,
    /// VRRP advertisement interval, a multiple of 10ms up to 40.95s (default 100ms); with
    /// VRRPv2 whole seconds up to 255s (default 1s).
    #[arg(long, env = "XVIP_VRRP_ADVERT_INT")]
    pub vrrp_advert_int: Option<String>,
    /// Whether a higher-priority node takes the VIP from a live master (default true).
    #[arg(long, env = "XVIP_VRRP_PREEMPT")]
    pub vrrp_preempt: Option<bool>,
    /// Unicast VRRP peer instead of multicast 224.0.0.18; repeat for several.
    #[arg(long = "vrrp-peer", env = "XVIP_VRRP_PEERS", value_delimiter = ',')]
    pub vrrp_peers: Vec<String>,
    /// Priority taken off while no backend can be served (default 50).
    #[arg(long, env = "XVIP_VRRP_HEALTH_PENALTY")]
    pub vrrp_health_penalty: Option<u32>,
    /// VRRP version, 2 (RFC 3768, keepalived's default) or 3 (default).
    #[arg(long, env = "XVIP_VRRP_VERSION")]
    pub vrrp_version: Option<u32>,
    /// VRRPv2 authentication: none or pass (implied by --vrrp-auth-pass); ah is refused.
    #[arg(long, env = "XVIP_VRRP_AUTH_TYPE")]
    pub vrrp_auth_type: Option<String>,
    /// VRRPv2 PASS password, as keepalived's auth_pass (first 8 bytes count). Prefer the
    /// environment or the config file: a flag shows in `ps`.
    #[arg(long, env = "XVIP_VRRP_AUTH_PASS", hide_env_values = true)]
    pub vrrp_auth_pass: Option<vrrp::Secret>,
    /// An interface whose loss is a fault, as keepalived's `track_interface`: while it is
    /// down or missing this node is never VRRP master (a master resigns with priority 0);
    /// repeat for several.
    #[arg(
        long = "vrrp-track-interface",
        env = "XVIP_VRRP_TRACK_INTERFACES",
        value_delimiter = ','
    )]
    pub vrrp_track_interfaces: Vec<String>,
    /// Run on every VRRP state change as keepalived's `notify` script:
    /// `PATH INSTANCE NAME STATE PRIORITY` (STATE MASTER, BACKUP, FAULT or STOP), one at a
    /// time, killed after 10 s; never delays the election. Absolute, executable, writable
    /// only by its owner.
    #[arg(long, env = "XVIP_NOTIFY_EXEC")]
    pub notify_exec: Option<PathBuf>,
    /// A FIFO that gets a line per VRRP state change, as keepalived's `notify_fifo`:
    /// `INSTANCE "NAME" STATE PRIORITY`; created (0600) when missing; a line no reader
    /// takes at once is dropped (counted), never waited for.
    #[arg(long, env = "XVIP_NOTIFY_FIFO")]
    pub notify_fifo: Option<PathBuf>,
    /// A witness (e.g. the gateway) pinged every second: while it does not answer
    /// (--vrrp-track-ip-fall probes in a row) the VRRP priority is lowered by
    /// --vrrp-track-ip-weight, so a node that lost its uplink gives the VIP away.
    #[arg(long, env = "XVIP_VRRP_TRACK_IP")]
    pub vrrp_track_ip: Option<String>,
    /// Priority taken off while the witness does not answer, 1-253 (default 50).
    #[arg(long, env = "XVIP_VRRP_TRACK_IP_WEIGHT")]
    pub vrrp_track_ip_weight: Option<u32>,
    /// Probes in a row without an answer before the witness counts as lost, 1-100
    /// (default 3).
    #[arg(long, env = "XVIP_VRRP_TRACK_IP_FALL")]
    pub vrrp_track_ip_fall: Option<u32>,
    /// Follow the `kubernetes` EndpointSlices with this kubeconfig and add/remove masters
    /// (the --backend list stays the fallback while the API is unreachable).
    #[arg(long, env = "XVIP_DISCOVER_FROM_KUBECONFIG")]
    pub discover_from_kubeconfig: Option<PathBuf>,
    /// kubeadm's controlPlaneEndpoint (`NAME[:PORT]`): `xvip doctor` checks that every
    /// master's serving certificate names it (default: read from the kubeadm-config
    /// ConfigMap with --discover-from-kubeconfig).
    #[arg(long, env = "XVIP_CONTROL_PLANE_ENDPOINT")]
    pub control_plane_endpoint: Option<String>,
    /// Conntrack sync with the other nodes of the VRRP group, authenticated with the key in
    /// this file (the same on every node; at least 32 bytes, mode 0600 or stricter).
    #[arg(long, env = "XVIP_SYNC_KEY_FILE")]
    pub sync_key_file: Option<PathBuf>,
    /// arp (default): answer ARP for the VIPs; none: per-node mode, no ARP, no VRRP.
    #[arg(long, env = "XVIP_ANNOUNCE", value_enum)]
    pub announce: Option<Announce>,
    /// Kernel routing table of the VIP routes with --announce route (default 200).
    #[arg(long, env = "XVIP_ROUTE_TABLE")]
    pub route_table: Option<u32>,
    /// Give Services of type LoadBalancer addresses from the pools and announce them
    /// (docs/services.md).
    #[arg(long, env = "XVIP_SERVICES")]
    pub services: bool,
    /// Serve Services with no loadBalancerClass too (else only `xvip.io/lb`).
    #[arg(long, env = "XVIP_SERVICES_DEFAULT_CLASS")]
    pub services_default_class: bool,
    /// A pool range for Services, `[NAME=]CIDR|FIRST-LAST|ADDR` (pool `default` when
    /// unnamed); repeat for several. Replaces the file's `[[services.pool]]`.
    #[arg(
        long = "services-pool",
        env = "XVIP_SERVICES_POOLS",
        value_delimiter = ','
    )]
    pub services_pools: Vec<String>,
    /// Kubeconfig to watch Services with (default: --discover-from-kubeconfig's).
    #[arg(long, env = "XVIP_SERVICES_KUBECONFIG")]
    pub services_kubeconfig: Option<PathBuf>,
    /// This node's Kubernetes name, for `externalTrafficPolicy: Local` (default: the host
    /// name, as the kubelet names the node).
    #[arg(long, env = "XVIP_SERVICES_NODE_NAME")]
    pub services_node_name: Option<String>,
}
