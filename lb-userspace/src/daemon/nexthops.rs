//! Next hops, resolved on a thread of their own: every backend's output interface and MAC
//! from the kernel's route and neighbour tables (the kernel resolves what it lacks), once a
//! second and whenever the loop asks (a backend set changed). The netlink calls (bounded
//! by the socket's receive timeout, `net::netlink::socket`) run without the state lock and off
//! the event loop, so a slow kernel (a long `rtnl_lock` hold elsewhere on the node) delays
//! only the next-hop round: not the loop, not a status request, not VRRP. The lock is taken
//! twice per round, briefly: to read which backends need a hop, and to apply the answers.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use super::Shared;
use crate::{
    control::nexthop::{self, Hop, NextHopError},
    control::reconcile::Reconciler,
    net::iface::{Interface, format_mac},
};

/// How often a round runs without being asked.
const ROUND: Duration = Duration::from_secs(1);

/// The backends whose next hop the kernel must give (every one not on this node).
pub(super) fn wanted(r: &Reconciler) -> Vec<SocketAddr> {
    r.backends()
        .keys()
        .copied()
        .filter(|a| !r.is_local(a))
        .collect()
}

/// Applies one round's answers (`found[i]` for `addrs[i]`) to the reconciler: a backend
/// without a route, or whose route leaves by an interface xvip is not attached to, leaves
/// the table; one whose neighbour is still being resolved keeps its last MAC (none the
/// first time). `hops` keeps the description or reason per backend, logged when it
/// changes. A backend removed since `addrs` was read is skipped. Returns whether the table
/// must be rewritten.
pub(super) fn apply(
    r: &mut Reconciler,
    ifaces: &[Interface],
    hops: &mut BTreeMap<SocketAddr, String>,
    addrs: &[SocketAddr],
    found: Vec<Result<Hop, NextHopError>>,
) -> bool {
    let name = |i: u32| {
        ifaces
            .iter()
            .find(|f| f.index == i)
            .map_or_else(|| format!("ifindex {i}"), |f| f.name.clone())
    };
    let attached = |i: u32| ifaces.iter().any(|f| f.index == i);
    let mut changed = false;
    hops.retain(|a, _| r.backends().contains_key(a));
    for (addr, hop) in addrs.iter().zip(found) {
        if !r.backends().contains_key(addr) {
            continue;
        }
        let (line, ok) = match &hop {
            Ok(Hop::Remote(h)) if !attached(h.ifindex) => {
                changed |= r.set_next_hop(*addr, 0, None);
                let why = format!(
                    "the route to {} leaves by {}, which xvip is not attached to",
                    addr.ip(),
                    name(h.ifindex)
                );
                (why, false)
            }
            Ok(Hop::Remote(h)) => match h.mac {
                Some(mac) => {
                    changed |= r.set_next_hop(*addr, h.ifindex, Some(mac));
                    let line = format!(
                        "{} on {}{} at {}",
                        h.neighbour,
                        name(h.ifindex),
                        if h.via_gateway { " (gateway)" } else { "" },
                        format_mac(&mac)
                    );
                    (line, true)
                }
                None => {
                    let why = nexthop::unresolved_reason(&hop, name).unwrap_or_default();
                    // Being resolved: said in the status only; a failed resolution is logged.
                    if h.state != "failed" {
                        hops.insert(*addr, why);
                        continue;
                    }
                    (why, false)
                }
            },
            Ok(Hop::Local) => continue,
            Err(e) => {
                changed |= r.set_next_hop(*addr, 0, None);
                (e.to_string(), false)
            }
        };
        if hops.get(addr) != Some(&line) {
            if ok {
                log::info!("backend {addr}: next hop {line}");
            } else {
                log::warn!("backend {addr}: {line}; it stays out of the table");
            }
            hops.insert(*addr, line);
        }
    }
    changed
}

/// Asks the next-hop thread for a round now (a backend set changed).
#[derive(Clone)]
pub(super) struct Resolver(mpsc::SyncSender<()>);

impl Resolver {
    /// A round as soon as the thread is free; a request already pending covers this one.
    pub fn now(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the next-hop thread; it ends when every [`Resolver`] is dropped. `rewrite` is
/// called under the lock when a round changed a backend's hop.
pub(super) fn spawn(
    shared: Arc<Mutex<Shared>>,
    ifaces: Vec<Interface>,
    rewrite: fn(&mut Shared),
) -> std::io::Result<Resolver> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("next-hops".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(ROUND) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let addrs = wanted(&shared.lock().expect("poisoned").reconciler);
                // Without the lock: this may wait on the kernel (bounded by the timeout).
                let found = match nexthop::next_hops(addrs.iter().map(|a| a.ip())) {
                    Ok(f) => f,
                    Err(e) => {
                        log::warn!("next hops: {e}");
                        continue;
                    }
                };
                let mut s = shared.lock().expect("poisoned");
                let st = &mut *s;
                if apply(
                    &mut st.reconciler,
                    &ifaces,
                    &mut st.next_hops,
                    &addrs,
                    found,
                ) {
                    rewrite(st);
                }
            }
        })?;
    Ok(Resolver(tx))
}
