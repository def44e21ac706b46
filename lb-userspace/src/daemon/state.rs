//! What the daemon's loop holds: [`Daemon`], the state its handlers (in `events`,
//! `backends`, `announcing`) work on besides [`Shared`], and [`Sources`], where the loop's
//! events come from. Kept apart from the handlers so each of them imports it, not each
//! other.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::{
    signal::unix::Signal,
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::Shared;
use crate::{
    announce::arp::ArpSocket,
    config::{Settings, args::RunArgs},
    control::health::{HealthEvent, HealthSettings},
    net::iface::Interface,
    wire::arp::Arp,
};

/// The daemon's state outside [`Shared`]: what the handlers need besides the maps.
pub(super) struct Daemon {
    /// Asks the next-hop thread for a round (`nexthops`).
    pub(super) resolver: super::nexthops::Resolver,
    pub(super) args: RunArgs,
    pub(super) settings: Settings,
    pub(super) iface: Interface,
    /// The further interfaces, each with its ARP socket (their packets come through
    /// `Sources::other_arp`).
    pub(super) others: Vec<(Interface, Arc<ArpSocket>)>,
    /// Every attached interface, the first included: where next hops may lead.
    pub(super) all: Vec<Interface>,
    pub(super) health: Arc<HealthSettings>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) arp: Arc<ArpSocket>,
    pub(super) xdp_mode: &'static str,
    pub(super) started: Instant,
    /// The addresses xvip answers ARP for: the VIPs, and in full NAT a SNAT address that is
    /// not one of this node's own (the backends' replies must reach it).
    pub(super) vip_addrs: Vec<Ipv4Addr>,
    /// The same for IPv6 (NDP): the IPv6 VIPs and an IPv6 SNAT address not the node's own.
    pub(super) vip6_addrs: Vec<Ipv6Addr>,
    /// The NDP socket, when there are IPv6 addresses to announce (`--announce arp`).
    /// One per attached interface, in `all`'s order: the IPv6 SNAT address must be found
    /// from the masters' side too.
    pub(super) ndp: Vec<(Interface, Arc<crate::announce::ndp::NdpSocket>)>,
    /// The IPv6 backends' checkers (the configured set, reloaded by SIGHUP; discovery is
    /// IPv4 only).
    pub(super) checkers6: BTreeMap<SocketAddrV6, JoinHandle<()>>,
    pub(super) route_spec: Option<crate::announce::route::RouteSpec>,
    pub(super) checkers: BTreeMap<SocketAddrV4, JoinHandle<()>>,
    pub(super) health_tx: mpsc::Sender<HealthEvent>,
    /// Tells the VRRP task whether this node can serve (health-gated priority).
    pub(super) serve_tx: watch::Sender<bool>,
    pub(super) serve_rx: watch::Receiver<bool>,
    /// The same for the IPv6 instance: whether an IPv6 backend is healthy.
    pub(super) serve6_tx: watch::Sender<bool>,
    pub(super) serve6_rx: watch::Receiver<bool>,
    pub(super) discovery_report: crate::control::discovery::SharedReport,
    /// The last backend set discovery found: a SIGHUP keeps it (with the reloaded weights)
    /// rather than falling back to the static list until the API speaks again.
    pub(super) discovered: Option<BTreeSet<SocketAddrV4>>,
    /// The same for the IPv6 masters (an IPv6-only cluster's EndpointSlice).
    pub(super) discovered6: Option<BTreeSet<SocketAddrV6>>,
    /// The configured IPv6 backends (`settings.backends6` is the set in use: these, or the
    /// discovered ones with their weights).
    pub(super) static6: Vec<crate::config::BackendSpec6>,
    /// Gratuitous ARP rounds still to send after becoming VRRP master, and when.
    pub(super) garp_burst: u32,
    pub(super) garp_burst_at: tokio::time::Instant,
    /// An IPv4 election won but not yet announced: the node first asks who answers for
    /// the VIP (`announcing::TAKEOVER_PROBE`) and announces when this passes unanswered by
    /// an xvip that outranks it.
    pub(super) takeover_at: Option<tokio::time::Instant>,
    pub(super) _vip_on_lo: Option<crate::dataplane::local::VipOnLo>,
    /// Conntrack sync (`--sync-key-file`), told of VRRP transitions.
    pub(super) sync: Option<Arc<crate::sync::SyncHandle>>,
    /// Other claimants of the VIPs seen on the wire (`announce::claims`).
    pub(super) claims: crate::announce::claims::Claims,
    /// Whether the (IPv4) election says this node holds the VIPs; announcing also needs
    /// that no other xvip outranking it claims them (`claims`).
    pub(super) vrrp_master: bool,
    /// The IPv4 election's live status (its priority goes into the ARP frames' mark).
    pub(super) vrrp_report: Option<crate::announce::vrrp::Report>,
    /// Whether a takeover notice to the known clients is going, per family (`takeover`).
    pub(super) telling: [Arc<std::sync::atomic::AtomicBool>; 2],
    /// What the tracked interfaces and the witness say (`track`): both VRRP instances listen.
    pub(super) fault_rx: watch::Receiver<crate::announce::vrrp::Tracked>,
    /// elect (#23): the running elections' configured priority, set again by SIGHUP.
    pub(super) vrrp_priority: Vec<crate::announce::vrrp::PrioritySetter>,
    /// The notify hooks (`--notify-exec`, `--notify-fifo`), told of every state change.
    pub(super) notifier: Option<crate::announce::vrrp::notify::Notifier>,
    /// The Services task's report (`--services`).
    pub(super) services_report: crate::services::watch::SharedReport,
    /// The IPv4 Service addresses the statuses give (`--services`): answered and announced
    /// exactly as the VIPs, by the same owner.
    pub(super) service_addrs: Vec<Ipv4Addr>,
    /// The IPv6 Service addresses (`--services`): answered (NDP) and advertised by the same
    /// owner as the IPv4 ones, the IPv4 election's master.
    pub(super) service6_addrs: Vec<std::net::Ipv6Addr>,
    /// The Services task's end of the channel, until it starts.
    pub(super) services_tx: Option<crate::services::watch::Announce>,
    /// The channel's other end (the status endpoint reads what is announced).
    pub(super) services_rx: Option<watch::Receiver<BTreeSet<std::net::IpAddr>>>,
}

/// Where the loop's events come from; kept apart from [`Daemon`] so a handler can take
/// `&mut Daemon` while the loop waits on these.
pub(super) struct Sources {
    pub(super) sigterm: Signal,
    pub(super) sigint: Signal,
    pub(super) sighup: Signal,
    pub(super) health: mpsc::Receiver<HealthEvent>,
    pub(super) garp: tokio::time::Interval,
    pub(super) resolve: tokio::time::Interval,
    /// Refreshes the ARP frames' mark and, while yielded, probes the VIP (`claims`).
    pub(super) claims: tokio::time::Interval,
    /// Reads the handshake counters for passive health.
    pub(super) passive: tokio::time::Interval,
    pub(super) vrrp: Option<mpsc::UnboundedReceiver<crate::announce::vrrp::Change>>,
    /// The IPv6 VRRP instance's state changes.
    pub(super) vrrp6: Option<mpsc::UnboundedReceiver<crate::announce::vrrp::Change>>,
    /// ARP packets from the further interfaces' sockets: (index in `Daemon::others`, packet).
    pub(super) other_arp: mpsc::Receiver<(usize, Arp)>,
    /// Neighbour solicitations from the NDP sockets: (index in `Daemon::ndp`, solicitation).
    pub(super) ndp_rx: mpsc::Receiver<(usize, crate::wire::ndp::Solicitation)>,
    /// Backend sets from the EndpointSlice watch (`--discover-from-kubeconfig`).
    pub(super) discovery: Option<mpsc::Receiver<BTreeSet<SocketAddr>>>,
    /// The Service addresses to announce (`--services`).
    pub(super) services: Option<watch::Receiver<BTreeSet<std::net::IpAddr>>>,
}

impl Sources {
    /// Takes a VRRP instance's state channel (`v6`: the IPv6 instance's): the loop listens
    /// to it from now on.
    pub fn listen_vrrp(
        &mut self,
        v6: bool,
    ) -> mpsc::UnboundedSender<crate::announce::vrrp::Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        *if v6 { &mut self.vrrp6 } else { &mut self.vrrp } = Some(rx);
        tx
    }
}
