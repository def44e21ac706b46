//! VIP failover between xvip nodes with VRRPv3 (RFC 5798, IPv4 and IPv6) or VRRPv2 with
//! PASS authentication (RFC 3768, IPv4, as keepalived speaks it), interoperable with
//! keepalived: the settings, and the task that runs the election on the interface and tells
//! the daemon when this node becomes master (answer ARP or NDP, gratuitous ARP or
//! unsolicited NA burst) or backup (stay silent). One task carries one family (one VRID one
//! family, as keepalived's instances): a dual-stack node runs one per family, both with
//! `--vrrp-vrid`, IPv4 to 224.0.0.18 from the primary address, IPv6 to ff02::12 from the
//! link-local address. The mismatch guard keeps this node from becoming master while adverts for
//! its VRID arrive that it cannot join (other version, other password, other v2 interval).
//!
//! The VIPs are never interface addresses here, so priority 255 (address owner) is not used.
//! Data path state is not synchronised: see `docs/failover.md`.

pub mod guard;
pub mod machine;
pub mod notify;
mod receive;
pub mod socket;
pub mod witness;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    config::vrrp::VrrpSettings,
    net::iface::Interface,
    wire,
    wire::vrrp::{Advert, DropReason},
};
pub use machine::{Action, Machine, Params, STARTUP_LISTEN, State};
use receive::{Rejected, auth_name, classify};
pub use socket::{SocketError, VrrpSocket};

/// A state change as the daemon hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub state: State,
    /// A new master whose predecessor fell silent (see
    /// [`machine::Machine::took_over_from_silence`]): that one may be alive and still
    /// answering for the VIP where its adverts are not heard.
    pub from_silence: bool,
}

/// VRRP failover (absent without `--vrrp-vrid`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VrrpStatus {
    pub vrid: u8,
    /// initialize, backup or master.
    pub state: String,
    /// The current master's address, when known.
    pub master: Option<String>,
    /// Our own (primary) address.
    pub address: String,
    /// Priority advertised now (configured, minus the health penalty while no backend can
    /// be served).
    pub priority: u8,
    pub configured_priority: u8,
    pub preempt: bool,
    pub advert_interval_ms: f64,
    /// Learnt from the master's advertisements.
    pub master_adver_interval_ms: f64,
    pub transitions: u64,
    pub adverts_sent: u64,
    /// Advertisements that passed every check.
    pub adverts_received: u64,
    pub send_errors: u64,
    /// Advertisements dropped, by reason.
    pub drops: BTreeMap<String, u64>,
    /// VRRP version spoken, 2 or 3.
    #[serde(default)]
    pub version: u8,
    /// Authentication: "none" or "pass" (never the password).
    #[serde(default)]
    pub auth: String,
    /// The mismatch guard holds: adverts for our VRID arrive that we cannot join (other
    /// version, password or v2 interval), so this node does not become master.
    #[serde(default)]
    pub guard_holding: bool,
    /// Routers seen advertising our VRID that way (at most 16, the latest heard).
    #[serde(default)]
    pub conflicts: Vec<VrrpConflict>,
    /// Such routers forgotten: evicted from the full list, or silent for 5 minutes.
    #[serde(default)]
    pub conflicts_evicted: u64,
    /// Guard log lines not written (over the per-minute budget).
    #[serde(default)]
    pub guard_logs_suppressed: u64,
}

/// A router advertising our VRID in a way we cannot join (the mismatch guard).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VrrpConflict {
    pub peer: String,
    /// The drop reason: version_mismatch, auth_type, auth_pass or interval_mismatch.
    pub reason: String,
    /// The VRRP version it speaks.
    pub version: u8,
    pub adverts: u64,
    /// Seconds since its last such advertisement.
    pub last_seen_s: f64,
    /// Whether it still holds the guard.
    pub active: bool,
    /// Whether it kept its claimed rate for several adverts (a master steps down for it).
    #[serde(default)]
    pub owner: bool,
}

/// Queued packets read before a timer is acted on (see `Ctx::run`).
const QUEUED_BEFORE_TIMER: usize = 64;

/// Gratuitous ARP rounds sent on becoming master ...
pub const GARP_BURST: u32 = 3;
/// ... this far apart.
pub const GARP_BURST_SPACING: Duration = Duration::from_millis(100);

/// Why the VRRP task could not start.
#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    /// The interface has no address of the family to send advertisements from (IPv4: a
    /// primary address; IPv6: a link-local one).
    #[error("VRRP on {name}: the interface has no {what} address to advertise from")]
    NoAddress { name: String, what: &'static str },
    /// The socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
}

/// The live VRRP status, shared with the status endpoint.
pub type Report = Arc<Mutex<VrrpStatus>>;

/// The running VRRP task: a thread of its own with its own (single-threaded) runtime, so
/// that nothing the daemon's runtime does (a blocked worker, a slow status request, a
/// stalled netlink call) can delay an advertisement or the master-down timer.
pub struct Handle {
    stop: oneshot::Sender<()>,
    /// Whether the router was master when it stopped; dropped unsent when the task dies.
    done: oneshot::Receiver<bool>,
    report: Report,
    /// The configured priority, changed by a reload (SIGHUP).
    priority: Arc<watch::Sender<u8>>,
}

/// Changes a running router's configured priority (a SIGHUP reload, as keepalived's
/// reload does): the health penalty and the witness's weight still come off it, and the
/// election follows the RFC from there (a master lowered below a preempting backup loses
/// the VIP to it after the backup's Master_Down_Interval; a backup raised above the master
/// with preempt takes over the same way). Clamped to 1-254 as at start.
#[derive(Clone)]
pub struct PrioritySetter(Arc<watch::Sender<u8>>);

impl PrioritySetter {
    /// Sets the configured priority; nothing happens when it is the current one.
    pub fn set(&self, priority: u8) {
        self.0
            .send_if_modified(|p| std::mem::replace(p, priority) != priority);
    }
}

impl Handle {
    /// What changes the configured priority while the router runs.
    pub fn priority_setter(&self) -> PrioritySetter {
        PrioritySetter(self.priority.clone())
    }

    /// The live status.
    pub fn report(&self) -> Report {
        self.report.clone()
    }

    /// Shuts the router down (a master sends priority 0); returns whether it was master
    /// (false when the task had already died).
    pub async fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.done.await.unwrap_or(false)
    }
}

/// Starts the election on `iface` for the IPv4 `vips` (from the primary address). State
/// changes are sent on `events`; the advertised priority follows `can_serve` (false: the
/// health penalty applies); `tracked` says when the router is in [`State::Fault`] (a tracked
/// interface down) and what the witness takes off the priority.
///
/// # Errors
/// [`VrrpError`] when the interface has no IPv4 address or the socket cannot be set up.
pub fn spawn(
    settings: &VrrpSettings,
    iface: &Interface,
    vips: &[Ipv4Addr],
    can_serve: watch::Receiver<bool>,
    tracked: watch::Receiver<Tracked>,
    events: mpsc::UnboundedSender<Change>,
) -> Result<Handle, VrrpError> {
    if iface.ipv4.is_unspecified() {
        return Err(VrrpError::NoAddress {
            name: iface.name.clone(),
            what: "IPv4",
        });
    }
    let vips: Vec<IpAddr> = vips.iter().map(|v| IpAddr::V4(*v)).collect();
    spawn_from(
        settings,
        iface,
        IpAddr::V4(iface.ipv4),
        &vips,
        can_serve,
        tracked,
        events,
    )
}

/// Starts the IPv6 election on `iface` for the IPv6 `vips`, from the interface's
/// link-local address (RFC 5798 section 5.1.2.1), with the peers of `settings` that are
/// IPv6; like [`spawn`] otherwise.
///
/// # Errors
/// [`VrrpError`] when the interface has no link-local address or the socket cannot be set
/// up.
pub fn spawn6(
    settings: &VrrpSettings,
    iface: &Interface,
    vips: &[std::net::Ipv6Addr],
    can_serve: watch::Receiver<bool>,
    tracked: watch::Receiver<Tracked>,
    events: mpsc::UnboundedSender<Change>,
) -> Result<Handle, VrrpError> {
    let ll =
        crate::announce::ndp::link_local(&crate::announce::ndp::interface_addresses(&iface.name))
            .ok_or_else(|| VrrpError::NoAddress {
            name: iface.name.clone(),
            what: "link-local IPv6",
        })?;
    let vips: Vec<IpAddr> = vips.iter().map(|v| IpAddr::V6(*v)).collect();
    spawn_from(
        settings,
        iface,
        IpAddr::V6(ll),
        &vips,
        can_serve,
        tracked,
        events,
    )
}

fn spawn_from(
    settings: &VrrpSettings,
    iface: &Interface,
    src: IpAddr,
    vips: &[IpAddr],
    can_serve: watch::Receiver<bool>,
    tracked: watch::Receiver<Tracked>,
    events: mpsc::UnboundedSender<Change>,
) -> Result<Handle, VrrpError> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for v in vips {
        if !addrs.contains(v) && v.is_ipv4() == src.is_ipv4() {
            addrs.push(*v);
        }
    }
    // Each family's task talks to that family's peers only.
    let mut settings = settings.clone();
    settings.peers.retain(|p| p.is_ipv4() == src.is_ipv4());
    let report: Report = Arc::new(Mutex::new(VrrpStatus::default()));
    let mut ctx = Ctx {
        machine: Machine::new(Params {
            priority: settings
                .effective_priority(*can_serve.borrow())
                .saturating_sub(tracked.borrow().penalty)
                .max(1),
            advert_interval: settings.advert_interval,
            preempt: settings.preempt,
            primary: src,
            version: settings.version,
            startup_listen: STARTUP_LISTEN,
        }),
        settings,
        src,
        addrs,
        events,
        report: report.clone(),
        sent: 0,
        received: 0,
        send_errors: 0,
        addr_mismatch: 0,
        drops: BTreeMap::new(),
        guard: guard::Guard::default(),
        guard_was_holding: false,
        failpoint_panic_when_master: false,
        tracked: Tracked::default(),
    };
    ctx.publish();
    let (priority_tx, priority_rx) = watch::channel(ctx.settings.priority);
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    // The socket is registered with the thread's own reactor, so it is opened there.
    let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(1);
    let (name, index) = (iface.name.clone(), iface.index);
    let thread_err = |source| SocketError {
        name: iface.name.clone(),
        what: "start the VRRP thread",
        source,
    };
    let failpoint = std::env::var(FAILPOINT_ENV).ok();
    std::thread::Builder::new()
        .name(if src.is_ipv4() { "vrrp" } else { "vrrp6" }.into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = opened_tx.send(Err(SocketError {
                        name: name.clone(),
                        what: "start the VRRP thread's runtime",
                        source: e,
                    }));
                    return;
                }
            };
            rt.block_on(async move {
                let sock = match VrrpSocket::open(&name, index, src) {
                    Ok(s) => {
                        let _ = opened_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                ctx.failpoint_panic_when_master = failpoint.as_deref() == Some(FAILPOINT_PANIC);
                let was_master = ctx
                    .run(sock, can_serve, tracked, priority_rx, stop_rx)
                    .await;
                let _ = done_tx.send(was_master);
            });
        })
        .map_err(thread_err)?;
    opened_rx
        .recv()
        .map_err(|_| thread_err(std::io::Error::other("it ended before opening its socket")))??;
    Ok(Handle {
        stop: stop_tx,
        done: done_rx,
        report,
        priority: Arc::new(priority_tx),
    })
}

/// Fault injection for the supervision test (`tests/tests/vrrp.rs`): with
/// `XVIP_FAILPOINT=vrrp-panic-when-master` in its environment, the VRRP task panics three
/// seconds after it became master, as a bug would. Read once at start; nothing else reads it.
pub const FAILPOINT_ENV: &str = "XVIP_FAILPOINT";
/// The value of [`FAILPOINT_ENV`] that arms it.
pub const FAILPOINT_PANIC: &str = "vrrp-panic-when-master";

struct Ctx {
    machine: Machine,
    settings: VrrpSettings,
    src: IpAddr,
    /// The VIP addresses, as advertised (all of the family of `src`).
    addrs: Vec<IpAddr>,
    events: mpsc::UnboundedSender<Change>,
    report: Report,
    sent: u64,
    received: u64,
    send_errors: u64,
    addr_mismatch: u64,
    drops: BTreeMap<DropReason, u64>,
    /// Routers that advertise our VRID in a way we cannot join (bounded, by address).
    guard: guard::Guard,
    guard_was_holding: bool,
    /// See [`FAILPOINT_ENV`].
    failpoint_panic_when_master: bool,
    /// What the tracked interfaces and the witness said last.
    tracked: Tracked,
}

/// What the node's own checks say about the election (`daemon::track`): a tracked
/// interface is down (FAULT), and the priority the witness takes off while it does not
/// answer (0 when it does, or without one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    pub fault: bool,
    pub penalty: u8,
}

impl Ctx {
    async fn run(
        mut self,
        sock: VrrpSocket,
        mut can_serve: watch::Receiver<bool>,
        mut tracked: watch::Receiver<Tracked>,
        mut configured: watch::Receiver<u8>,
        mut stop: oneshot::Receiver<()>,
    ) -> bool {
        let mut buf = vec![0u8; 4096];
        let mut health_open = true;
        let mut tracked_open = true;
        let mut configured_open = true;
        let mut serving = *can_serve.borrow_and_update();
        let acts = self.machine.startup(Instant::now());
        self.apply(&sock, acts);
        let t = *tracked.borrow_and_update();
        self.on_tracked(&sock, t, serving);
        self.publish();
        let mut master_since: Option<Instant> = None;
        loop {
            if self.failpoint_panic_when_master && self.machine.state() == State::Master {
                let since = *master_since.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < Duration::from_secs(3),
                    "{FAILPOINT_ENV}={FAILPOINT_PANIC}: the VRRP task panics"
                );
            }
            let deadline = self.machine.next_deadline();
            let sleep = tokio::time::sleep_until(
                deadline
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                _ = &mut stop => break,
                r = sock.recv(&mut buf) => match r {
                    Ok(n) => self.on_packet(&sock, &buf[..n]),
                    Err(e) => {
                        log::warn!("VRRP receive: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = sleep, if deadline.is_some() => {
                    // Adverts that arrived while this thread could not run (a stopped or
                    // starved process) are read before the timer is acted on: otherwise a
                    // backup resumed after SIGCONT takes over from a live master whose
                    // adverts sit in its queue. Bounded, so a flood cannot hold the timer.
                    for _ in 0..QUEUED_BEFORE_TIMER {
                        match sock.try_recv(&mut buf) {
                            Ok(n) => self.on_packet(&sock, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                    let acts = self.machine.poll(Instant::now());
                    self.apply(&sock, acts);
                }
                r = can_serve.changed(), if health_open => match r {
                    Ok(()) => {
                        let ok = *can_serve.borrow_and_update();
                        serving = ok;
                        let p = self.priority(ok);
                        if p != self.machine.priority() {
                            log::warn!(
                                "VRRP vrid {}: {} backend to serve, advertising priority {p}",
                                self.settings.vrid,
                                if ok { "a" } else { "no" }
                            );
                            self.machine.set_priority(p);
                        }
                    }
                    Err(_) => health_open = false,
                },
                r = tracked.changed(), if tracked_open => match r {
                    Ok(()) => {
                        let t = *tracked.borrow_and_update();
                        self.on_tracked(&sock, t, serving);
                    }
                    Err(_) => tracked_open = false,
                },
                r = configured.changed(), if configured_open => match r {
                    Ok(()) => {
                        let p = *configured.borrow_and_update();
                        self.on_configured(&sock, p, serving);
                    }
                    Err(_) => configured_open = false,
                },
            }
            self.publish();
        }
        let was_master = self.machine.state() == State::Master;
        let acts = self.machine.shutdown(Instant::now());
        self.apply(&sock, acts);
        self.publish();
        was_master
    }

    /// The priority to advertise: configured, less the health penalty while no backend
    /// can be served, less the witness's weight while it does not answer (down to 1).
    fn priority(&self, can_serve: bool) -> u8 {
        self.settings
            .effective_priority(can_serve)
            .saturating_sub(self.tracked.penalty)
            .max(1)
    }

    /// A reload changed the configured priority: advertised from now on (less the
    /// penalties). A master says so at once with an advert, so that a preempting backup
    /// it now ranks below counts its Master_Down_Interval from here; a backup raised above
    /// a live master with preempt takes over when its timer runs out (the master's adverts
    /// no longer reset it), as RFC 5798 section 6.4.2 has it.
    fn on_configured(&mut self, sock: &VrrpSocket, configured: u8, serving: bool) {
        let configured = configured.clamp(1, 254);
        if configured == self.settings.priority {
            return;
        }
        let was = std::mem::replace(&mut self.settings.priority, configured);
        let p = self.priority(serving);
        log::warn!(
            "VRRP vrid {}: priority {was} -> {configured} (reload), advertising {p}",
            self.settings.vrid
        );
        self.machine.set_priority(p);
        if self.machine.state() == State::Master {
            self.apply(sock, vec![Action::Send { priority: p }]);
        }
    }

    /// A tracked interface went down or came back (FAULT), or the witness was lost or
    /// answered again (the priority).
    fn on_tracked(&mut self, sock: &VrrpSocket, t: Tracked, serving: bool) {
        let was = std::mem::replace(&mut self.tracked, t);
        let now = Instant::now();
        if t.fault != was.fault || (t.fault && self.machine.state() != State::Fault) {
            let acts = if t.fault {
                self.machine.fault(now)
            } else {
                self.machine.recover(now)
            };
            self.apply(sock, acts);
        }
        let p = self.priority(serving);
        if p != self.machine.priority() {
            log::warn!(
                "VRRP vrid {}: the witness {}, advertising priority {p}",
                self.settings.vrid,
                if t.penalty > 0 {
                    "does not answer"
                } else {
                    "answers again"
                }
            );
            self.machine.set_priority(p);
        }
    }

    fn on_packet(&mut self, sock: &VrrpSocket, pkt: &[u8]) {
        match self.check(pkt) {
            Ok(r) => {
                self.received += 1;
                let int = Duration::from_millis(u64::from(r.advert.max_adver_int_cs) * 10);
                let acts = self
                    .machine
                    .on_advert(Instant::now(), r.src, r.advert.priority, int);
                self.apply(sock, acts);
            }
            Err((reason, _, Some(r))) if reason.is_conflict() => {
                *self.drops.entry(reason).or_default() += 1;
                self.on_conflict(sock, reason, &r);
            }
            Err((reason, src, _)) => {
                let n = self.drops.entry(reason).or_default();
                *n += 1;
                if *n == 1 && reason != DropReason::Own {
                    log::warn!(
                        "VRRP vrid {}: dropped an advertisement from {src:?} ({}; counted from now on)",
                        self.settings.vrid,
                        reason.name()
                    );
                }
            }
        }
    }

    /// The mismatch guard: `r` (for our VRID, from an allowed sender) comes from a router
    /// that advertises the VRID and cannot hear us. Hold off becoming master for at most its
    /// Master_Down_Interval capped to ours (`guard::cap`); a master steps down only once the
    /// sender has kept its claimed rate for `guard::STREAK` adverts. One log line per new
    /// sender, within the guard's budget.
    fn on_conflict(&mut self, sock: &VrrpSocket, reason: DropReason, r: &wire::vrrp::Received) {
        let now = Instant::now();
        let claim = guard::Claim {
            src: r.src,
            reason,
            version: r.advert.version,
            priority: r.advert.priority,
            interval: Duration::from_millis(u64::from(r.advert.max_adver_int_cs.max(1)) * 10),
        };
        let heard = self
            .guard
            .heard(now, &claim, self.machine.own_master_down_interval());
        let acts = self.machine.hold(now, heard.until, heard.owner);
        self.apply(sock, acts);
        if !heard.log {
            return;
        }
        let ours = self.settings.version.number();
        let vrid = self.settings.vrid;
        let (what, fix) = match reason {
            DropReason::VersionMismatch => (
                format!(
                    "advertises it in VRRPv{}, we speak VRRPv{ours}",
                    r.advert.version.number()
                ),
                format!(
                    "set --vrrp-version {} (XVIP_VRRP_VERSION, vrrp_version) to join its group",
                    r.advert.version.number()
                ),
            ),
            DropReason::AuthType => (
                format!(
                    "uses authentication {}, we {}",
                    auth_name(r.advert.auth.kind),
                    auth_name(self.settings.auth.kind)
                ),
                if r.advert.auth.kind == crate::wire::vrrp::AUTH_TYPE_PASS {
                    "set --vrrp-auth-pass (XVIP_VRRP_AUTH_PASS, vrrp_auth_pass) to the group's auth_pass".into()
                } else {
                    "give no --vrrp-auth-pass, as the group has none".into()
                },
            ),
            DropReason::AuthPass => (
                "advertises it with another password".into(),
                "set --vrrp-auth-pass (XVIP_VRRP_AUTH_PASS, vrrp_auth_pass) to the group's auth_pass".into(),
            ),
            _ => (
                format!(
                    "advertises every {} s, we every {} s (VRRPv2 drops adverts with another interval)",
                    r.advert.max_adver_int_cs / 100,
                    self.settings.advert_interval.as_secs()
                ),
                format!(
                    "set --vrrp-advert-int {}s to join its group",
                    r.advert.max_adver_int_cs / 100
                ),
            ),
        };
        log::error!(
            "VRRP vrid {vrid}: {} {what}: another router owns this VRID, so this node will not become master while its advertisements arrive at the rate they claim; {fix}",
            r.src
        );
    }

    /// RFC 5798 / RFC 3768 section 7.1 plus the peer list and the mismatch guard's checks.
    fn check(&mut self, pkt: &[u8]) -> Result<wire::vrrp::Received, Rejected> {
        let r = classify(&self.settings, self.src, pkt)?;
        // RFC 5798 section 7.1: a different address list is logged, not dropped.
        let same = r.advert.addrs.len() == self.addrs.len()
            && self.addrs.iter().all(|a| r.advert.addrs.contains(a));
        if !same {
            self.addr_mismatch += 1;
            if self.addr_mismatch == 1 {
                log::warn!(
                    "VRRP vrid {}: {} advertises {:?}, we have {:?} (misconfiguration?)",
                    self.settings.vrid,
                    r.src,
                    r.advert.addrs,
                    self.addrs
                );
            }
        }
        Ok(r)
    }

    fn apply(&mut self, sock: &VrrpSocket, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { priority } => {
                    let advert = Advert {
                        version: self.settings.version,
                        vrid: self.settings.vrid,
                        priority,
                        max_adver_int_cs: (self.settings.advert_interval.as_millis() / 10) as u16,
                        addrs: self.addrs.clone(),
                        auth: self.settings.auth,
                    };
                    let dsts: Vec<IpAddr> = if self.settings.peers.is_empty() {
                        vec![match self.src {
                            IpAddr::V4(_) => wire::vrrp::MULTICAST.into(),
                            IpAddr::V6(_) => wire::vrrp::MULTICAST6.into(),
                        }]
                    } else {
                        self.settings.peers.clone()
                    };
                    for dst in dsts {
                        match sock.send(&advert.encode(self.src, dst), dst) {
                            Ok(()) => self.sent += 1,
                            Err(e) => {
                                self.send_errors += 1;
                                if self.send_errors == 1 || self.send_errors.is_power_of_two() {
                                    log::warn!("VRRP advertisement to {dst}: {e}");
                                }
                            }
                        }
                    }
                }
                Action::Transition { from, to, why } => {
                    log::info!(
                        "VRRP vrid {}: {} -> {} ({why}), priority {}",
                        self.settings.vrid,
                        from.name(),
                        to.name(),
                        self.machine.priority()
                    );
                    let _ = self.events.send(Change {
                        state: to,
                        from_silence: to == State::Master && self.machine.took_over_from_silence(),
                    });
                }
            }
        }
    }

    fn publish(&mut self) {
        let now = Instant::now();
        let holding = self.machine.held(now);
        self.guard.prune(now);
        if self.guard_was_holding && !holding && self.guard.may_log(now) {
            log::warn!(
                "VRRP vrid {}: no advertisement from another group for its down interval; the mismatch guard released",
                self.settings.vrid
            );
        }
        self.guard_was_holding = holding;
        let m = &self.machine;
        let mut drops: BTreeMap<String, u64> = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    self.drops.get(r).copied().unwrap_or(0),
                )
            })
            .collect();
        drops.insert("addr_list_mismatch".into(), self.addr_mismatch);
        let st = VrrpStatus {
            vrid: self.settings.vrid,
            state: m.state().name().into(),
            master: m.master().map(|a| a.to_string()),
            address: self.src.to_string(),
            priority: m.priority(),
            configured_priority: self.settings.priority,
            preempt: self.settings.preempt,
            advert_interval_ms: self.settings.advert_interval.as_secs_f64() * 1e3,
            master_adver_interval_ms: m.master_adver_interval().as_secs_f64() * 1e3,
            transitions: m.transitions(),
            adverts_sent: self.sent,
            adverts_received: self.received,
            send_errors: self.send_errors,
            drops,
            version: self.settings.version.number(),
            auth: auth_name(self.settings.auth.kind).to_ascii_lowercase(),
            guard_holding: holding,
            conflicts: self
                .guard
                .conflicts()
                .map(|(peer, c)| VrrpConflict {
                    peer: peer.to_string(),
                    reason: c.reason.name().into(),
                    version: c.version.number(),
                    adverts: c.adverts,
                    last_seen_s: now.duration_since(c.last).as_secs_f64(),
                    active: c.until > now,
                    owner: c.owner(),
                })
                .collect(),
            conflicts_evicted: self.guard.evicted + self.guard.expired,
            guard_logs_suppressed: self.guard.logs_suppressed,
        };
        if let Ok(mut r) = self.report.lock() {
            *r = st;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::vrrp::{Secret, VrrpInput},
        wire::vrrp::{Auth, Version},
    };

    fn input() -> VrrpInput {
        VrrpInput {
            vrid: Some(51),
            ..Default::default()
        }
    }

    fn v2(pass: Option<&str>) -> VrrpInput {
        VrrpInput {
            version: Some(2),
            auth_pass: pass.map(|p| Secret(p.into())),
            ..input()
        }
    }

    /// keepalived 2.2.7 with the kubeadm guide's configuration (v2, PASS "42", 1 s, VRID
    /// 51, priority 101), as captured in `packet.rs`.
    const KEEPALIVED_V2: [u8; 40] = [
        0x45, 0xc0, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x18, 0x90, 192, 0, 2, 2, 224,
        0, 0, 18, 0x21, 51, 101, 1, 0x01, 0x01, 0x82, 0x33, 192, 0, 2, 100, b'4', b'2', 0, 0, 0, 0,
        0, 0,
    ];

    #[test]
    fn the_guard_classifies_what_keepalived_sends_by_our_settings() {
        let me = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
        let with = |mutate: fn(&mut VrrpInput)| {
            let mut i = v2(Some("42"));
            mutate(&mut i);
            VrrpSettings::resolve(i).unwrap().unwrap()
        };
        let reason =
            |s: &VrrpSettings| classify(s, me, &KEEPALIVED_V2).map(|_| ()).map_err(|e| e.0);
        // Configured like the group: accepted.
        let ok = with(|_| {});
        let r = classify(&ok, me, &KEEPALIVED_V2).unwrap();
        assert_eq!(
            (r.src, r.advert.priority),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 101)
        );
        // Each mismatch is its own reason, carries the advert, and is a conflict.
        let cases: Vec<(VrrpSettings, DropReason)> = vec![
            (
                with(|i| {
                    i.version = None;
                    i.auth_pass = None;
                }),
                DropReason::VersionMismatch,
            ),
            (
                with(|i| i.auth_pass = Some(Secret("43".into()))),
                DropReason::AuthPass,
            ),
            (
                with(|i| i.auth_pass = Some(Secret("420".into()))),
                DropReason::AuthPass,
            ),
            (with(|i| i.auth_pass = None), DropReason::AuthType),
            (
                with(|i| i.advert_int = Some("2s".into())),
                DropReason::IntervalMismatch,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(reason(&s), Err(want), "{s:?}");
            assert!(want.is_conflict());
            assert!(classify(&s, me, &KEEPALIVED_V2).unwrap_err().2.is_some());
        }
        // Not for us, not from a peer, or our own: plain drops, no guard.
        let other = with(|i| i.vrid = Some(52));
        assert_eq!(reason(&other), Err(DropReason::Vrid));
        let peers = with(|i| i.peers = vec!["192.0.2.9".into()]);
        assert_eq!(reason(&peers), Err(DropReason::NotPeer));
        let r = classify(&ok, Ipv4Addr::new(192, 0, 2, 2).into(), &KEEPALIVED_V2);
        assert_eq!(
            r.map(|_| ()).map_err(|e| (e.0, e.2.is_some())),
            Err((DropReason::Own, false))
        );
        for d in [
            DropReason::Vrid,
            DropReason::NotPeer,
            DropReason::Own,
            DropReason::Checksum,
        ] {
            assert!(!d.is_conflict(), "{d:?}");
        }
        // A broken packet never reaches the guard, whatever it claims.
        let mut bad = KEEPALIVED_V2;
        bad[21] = 52;
        assert_eq!(reason(&ok), Ok(()));
        assert_eq!(
            classify(&ok, me, &bad)
                .map(|_| ())
                .map_err(|e| (e.0, e.2.is_some())),
            Err((DropReason::Checksum, false))
        );
    }

    #[test]
    fn ipv6_adverts_are_classified_by_the_same_rules() {
        use std::net::Ipv6Addr;
        let (a, b) = (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3),
        );
        let msg = Advert {
            version: Version::V3,
            vrid: 51,
            priority: 120,
            max_adver_int_cs: 10,
            addrs: vec!["2001:db8::100".parse().unwrap()],
            auth: Auth::NONE,
        }
        .encode(a, wire::vrrp::MULTICAST6);
        let mut pkt =
            wire::vrrp::ipv6_header(a, wire::vrrp::MULTICAST6, wire::vrrp::TTL, msg.len() as u16)
                .to_vec();
        pkt.extend_from_slice(&msg);
        let s = VrrpSettings::resolve(input()).unwrap().unwrap();
        let r = classify(&s, b.into(), &pkt).unwrap();
        assert_eq!((r.src, r.advert.priority), (a.into(), 120));
        let reason = |s: &VrrpSettings, own: Ipv6Addr, p: &[u8]| {
            classify(s, own.into(), p)
                .map(|_| ())
                .map_err(|e| (e.0, e.1))
        };
        assert_eq!(reason(&s, a, &pkt), Err((DropReason::Own, Some(a.into()))));
        let mut peers = s.clone();
        peers.peers = vec![Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9).into()];
        assert_eq!(
            reason(&peers, b, &pkt),
            Err((DropReason::NotPeer, Some(a.into())))
        );
        let mut routed = pkt.clone();
        routed[7] = 64;
        assert_eq!(
            reason(&s, b, &routed),
            Err((DropReason::Ttl, Some(a.into())))
        );
        // An IPv6 task reads an IPv4 packet as broken, not as an advert.
        assert_eq!(
            reason(&s, b, &KEEPALIVED_V2).map_err(|e| e.0),
            Err(DropReason::Truncated)
        );
    }
}
