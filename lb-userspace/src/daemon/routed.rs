//! Routed mode (`--announce route`): the VIP routes put in or taken out as
//! `route::decide` says, and the stale ones a previous xvip left removed.

use std::{net::IpAddr, sync::Mutex};

use super::Shared;
use crate::announce::route::Withdrawn;

/// Removes routes a previous xvip on this interface left that this one does not announce
/// (another table, a VIP no longer configured).
pub(super) fn drop_stale_routes(spec: &crate::announce::route::RouteSpec) {
    let stale: Vec<(IpAddr, u32)> = match crate::announce::route::ours(spec.ifindex) {
        Ok(r) => r
            .into_iter()
            .filter(|(vip, table)| *table != spec.table || !spec.vips.contains(vip))
            .collect(),
        Err(e) => {
            log::warn!("reading the routes a previous xvip left: {e}");
            return;
        }
    };
    for (vip, table) in stale {
        let old = crate::announce::route::RouteSpec {
            vips: vec![vip],
            ifindex: spec.ifindex,
            table,
        };
        match crate::announce::route::withdraw(&old) {
            Ok(()) => log::info!(
                "removed a stale route {vip}/{} from table {table}",
                crate::announce::route::prefix_len(vip)
            ),
            Err(e) => log::warn!(
                "stale route {vip}/{} table {table}: {e}",
                crate::announce::route::prefix_len(vip)
            ),
        }
    }
}

/// Whether our program is the one the kernel runs on interface `ifindex` (`None` when the
/// kernel cannot say: the caller keeps what it knew).
fn program_attached(
    (program, placement): (Option<u32>, crate::dataplane::pins::Placement),
    ifindex: u32,
) -> Option<bool> {
    let program = program?;
    if placement == crate::dataplane::pins::Placement::Tc {
        return match aya::programs::SchedClassifier::query_tcx(
            aya::programs::NetworkInterface::Index(ifindex),
            aya::programs::TcAttachType::Ingress,
        ) {
            Ok((_, on)) => Some(on.iter().any(|p| p.id() == program)),
            Err(e) => {
                log::debug!("routed mode: cannot read the tc programs on ifindex {ifindex}: {e}");
                None
            }
        };
    }
    match crate::dataplane::pins::attached::attached_xdp(ifindex) {
        Ok(on) => Some(on.iter().any(|a| a.prog_id == program)),
        Err(e) => {
            log::debug!("routed mode: cannot read the XDP program on ifindex {ifindex}: {e}");
            None
        }
    }
}

/// Puts the VIP routes in or takes them out as [`crate::announce::route::decide`] says; `force`
/// repeats the change even if the state did not move (a tick, the stop). A tick also asks
/// the kernel whether our program is still on the interface: a program detached from
/// outside (`bpftool link detach`, the interface's driver) withdraws the routes rather
/// than leave this node's ECMP share in a blackhole; between ticks the last answer holds
/// (and while it is "not attached", every call asks again).
pub(super) fn sync_route(
    shared: &Mutex<Shared>,
    spec: &crate::announce::route::RouteSpec,
    stopping: bool,
    force: bool,
) {
    let asked = {
        let s = shared.lock().expect("poisoned");
        // "not attached" is also the state before the first decision (see `tasks`): then
        // every call asks, so the start announces at once and a detached program is seen.
        let unknown = s
            .route
            .as_ref()
            .is_some_and(|st| st.reason.as_deref() == Some(Withdrawn::NotAttached.reason()));
        let program = ((force || unknown) && !stopping)
            .then(|| (s.dataplane.program_id(), s.dataplane.placement()));
        drop(s);
        // The netlink question outside the lock.
        program.and_then(|p| program_attached(p, spec.ifindex))
    };
    let mut s = shared.lock().expect("poisoned");
    let healthy_backends = s
        .reconciler
        .backends()
        .values()
        .filter(|b| b.healthy && b.weight > 0)
        .count();
    let failed = s.route_failed;
    let Some(st) = s.route.as_mut() else {
        return;
    };
    let was_attached = st.reason.as_deref() != Some(Withdrawn::NotAttached.reason());
    let attached = asked.unwrap_or(was_attached);
    if was_attached && !attached {
        log::error!(
            "routed mode: the XDP program is no longer attached to ifindex {} (detached from outside xvip): withdrawing the routes; restart xvip to attach again",
            spec.ifindex
        );
    }
    let want = crate::announce::route::decide(crate::announce::route::RouteInput {
        attached,
        healthy_backends,
        stopping,
    });
    let retry = force || !failed;
    let announce = match want {
        Ok(()) if (!st.announced && retry) || force => true,
        Err(_) if (st.announced && retry) || force => false,
        _ => return,
    };
    // The change itself outside the lock (netlink: bounded by its timeout, but a slow
    // kernel must not stall the status endpoint); only this loop changes `route`.
    drop(s);
    let result = if announce {
        crate::announce::route::announce(spec)
    } else {
        crate::announce::route::withdraw(spec)
    };
    let mut s = shared.lock().expect("poisoned");
    let Some(st) = s.route.as_mut() else {
        return;
    };
    let (was, was_reason) = (st.announced, st.reason.clone());
    match (result, want) {
        (Ok(()), Ok(())) => {
            st.announced = true;
            st.reason = None;
        }
        (Ok(()), Err(why)) => {
            st.announced = false;
            st.reason = Some(why.reason().into());
        }
        (Err(e), _) => {
            if !failed {
                log::error!("routed mode: {e}");
            }
            // A failed withdrawal may have left some routes: still counted as announced.
            st.announced = want.is_err() && st.announced;
            st.reason = Some(e.to_string());
            s.route_failed = true;
            return;
        }
    }
    if st.announced != was || st.reason != was_reason {
        st.changes += 1;
        if st.announced {
            tracing::info!(
                table = spec.table,
                "route announced: {:?} in table {}",
                spec.vips,
                spec.table
            );
        } else {
            tracing::info!(
                table = spec.table,
                reason = st.reason.as_deref().unwrap_or(""),
                "route withdrawn from table {}: {}",
                spec.table,
                st.reason.as_deref().unwrap_or("")
            );
        }
    }
    s.route_failed = false;
}
