//! `xvip run`: the daemon's tasks wired together. [`run`] reads as the list of them: bring
//! the data path up (`startup`), start the sources of events (`tasks`: status endpoint,
//! health checkers, VRRP, discovery), run the one loop that owns the reconciler and the maps
//! (`events`), and shut down in order. `report` renders the status document, `routed` keeps
//! routed mode's routes.

mod announcing;
mod backends;
mod events;
mod nexthops;
mod report;
mod routed;
mod startup;
mod state;
mod takeover;
mod tasks;
mod track;

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

pub use startup::{check_config, health_settings};

use crate::{
    config::{ConfigError, args::RunArgs},
    control::reconcile::Reconciler,
    dataplane::{Dataplane, DataplaneError},
};

/// The compiled XDP object, embedded at build time (empty when built without it).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// Why the daemon stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The interface does not exist or is unusable (exit status 2).
    #[error(transparent)]
    Interface(#[from] crate::announce::arp::ArpError),
    /// TLS material for the health checks is unusable (exit status 2).
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsConfigError),
    /// Serving the node itself (VIP on lo, connect hook) failed.
    #[error(transparent)]
    Local(#[from] crate::dataplane::local::LocalError),
    /// The kernel side failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Pinned state or an attached program that is not this interface's xvip's.
    #[error(transparent)]
    Pins(#[from] crate::dataplane::pins::PinError),
    /// The VRRP socket could not be set up.
    #[error(transparent)]
    Vrrp(#[from] crate::announce::vrrp::VrrpError),
    /// The NDP socket (IPv6 VIPs) could not be set up.
    #[error(transparent)]
    Ndp(#[from] crate::announce::ndp::NdpError),
    /// The conntrack sync socket could not be set up.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// Anything else at run time.
    #[error("{0}")]
    Runtime(String),
}

impl DaemonError {
    /// The process exit status: 2 for bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Interface(_) | Self::Tls(_) => 2,
            Self::Pins(e) => e.exit_code(),
            Self::Dataplane(
                DataplaneError::Attach { .. } | DataplaneError::PinnedMismatch { .. },
            ) => 2,
            _ => 1,
        }
    }
}

#[derive(Default, Clone)]
struct CheckStats {
    ok: u64,
    failed: u64,
    transitions: u64,
    last_latency: Option<Duration>,
    last_error: Option<String>,
}

/// What the loop and the status endpoint share, behind one mutex.
struct Shared {
    dataplane: Dataplane,
    reconciler: Reconciler,
    checks: BTreeMap<SocketAddrV4, CheckStats>,
    swaps: u64,
    last_reconcile: Option<Duration>,
    last_detection: Option<Duration>,
    fail_open: bool,
    /// No primary is healthy: the backups hold the table.
    backups_serving: bool,
    /// Passive health: the handshake counters followed tick to tick.
    passive: crate::control::passive::PassiveTracker,
    /// Backends taken out by passive health, with the successful checks seen since.
    passive_down: BTreeMap<std::net::SocketAddr, u32>,
    /// Times passive health took each backend out.
    passive_ejections: BTreeMap<std::net::SocketAddr, u64>,
    /// Answering ARP for the IPv4 VIPs.
    announcing: bool,
    /// Answering NDP for the IPv6 VIPs (its own VRRP instance decides, with `--vrrp-vrid`).
    announcing6: bool,
    /// Check statistics of the IPv6 backends, and whether each is healthy.
    checks6: BTreeMap<std::net::SocketAddrV6, (CheckStats, bool)>,
    /// Tracked flows, counted off the main loop (see `dataplane::flows::count_conntrack`).
    conntrack_entries: Arc<AtomicUsize>,
    /// Flows not confirmed yet, counted the same way.
    unconfirmed_entries: Arc<AtomicUsize>,
    /// Each backend's next hop as the kernel's tables gave it at the last round, or why it
    /// has none (shown by `xvip status`; logged when it changes).
    next_hops: BTreeMap<std::net::SocketAddr, String>,
    /// Routed mode's VIP routes (`--announce route`).
    route: Option<crate::announce::route::RouteStatus>,
    /// The last route change failed: retried on the next tick rather than on every event.
    route_failed: bool,
    /// The loop's view of other claimants of the VIPs (`announce::claims`), for the status.
    claims: Option<crate::announce::claims::ClaimsStatus>,
    /// The same for the IPv6 VIPs (NDP).
    claims6: Option<crate::announce::claims::ClaimsStatus>,
}

/// Runs until SIGINT or SIGTERM.
///
/// # Errors
/// Startup failures leave the interface as it was.
pub async fn run(args: RunArgs) -> Result<(), DaemonError> {
    let up = startup::bring_up(&args).await?;
    let (mut d, mut sources) = state::Daemon::new(args, up)?;
    let vrrp = tasks::vrrp(&d, &mut sources)?;
    d.vrrp_report = vrrp.as_ref().map(|h| h.report());
    let vrrp6 = tasks::vrrp6(&d, &mut sources)?;
    d.vrrp6_report = vrrp6.as_ref().map(|h| h.report());
    // elect (#23): SIGHUP sets a new priority in both elections.
    d.vrrp_priority = [&vrrp, &vrrp6]
        .into_iter()
        .flatten()
        .map(|h| h.priority_setter())
        .collect();
    d.sync = tasks::sync(&d)?;
    let mut endpoint = tasks::status_endpoint(&d, vrrp.as_ref(), vrrp6.as_ref()).await?;
    let discovery = tasks::discovery(&d, &mut sources);
    let services = tasks::services(&mut d, &mut sources);
    d.start_checkers();
    d.announce_at_start();
    let died = d.event_loop(sources, &mut endpoint).await;
    if let Some(task) = died {
        log::error!(
            "the {task} task ended unexpectedly: withdrawing the VIP and exiting, so that the service manager restarts xvip"
        );
    }
    d.shut_down([vrrp, vrrp6], discovery, services, endpoint)
        .await?;
    match died {
        Some(task) => Err(DaemonError::Runtime(format!(
            "the {task} task ended unexpectedly"
        ))),
        None => Ok(()),
    }
}
