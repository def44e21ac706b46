//! After a takeover, the clients in the flow table (synced flows included) are told the new
//! owner with a unicast ARP reply or neighbour advertisement each (`announce::clients`), on
//! a thread of its own: the loop never waits on the map walk or the pacing.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use super::Shared;
use crate::announce::{
    arp::ArpSocket,
    clients::{self, Client},
    ndp::NdpSocket,
};
use crate::net::iface::Interface;

/// One family's senders: per attached interface, its index, MAC and socket.
pub(super) enum Senders {
    Arp(Vec<(Interface, Arc<ArpSocket>)>, Vec<Ipv4Addr>),
    Ndp(Vec<(Interface, Arc<NdpSocket>)>, Vec<Ipv6Addr>),
}

/// Starts telling the known clients of `senders`' family, unless a round for that family
/// is still going (`busy`): a flapping election never stacks walks.
pub(super) fn tell_known_clients(shared: &Mutex<Shared>, senders: Senders, busy: &Arc<AtomicBool>) {
    let no_vips = match &senders {
        Senders::Arp(_, v) => v.is_empty(),
        Senders::Ndp(_, v) => v.is_empty(),
    };
    if no_vips || busy.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(maps) = shared.lock().expect("poisoned").dataplane.client_maps() else {
        busy.store(false, Ordering::Release);
        return;
    };
    let busy = busy.clone();
    let spawned = std::thread::Builder::new()
        .name("xvip-takeover".into())
        .spawn(move || {
            let v6 = matches!(senders, Senders::Ndp(..));
            let found = if v6 {
                maps.clients6(clients::MAX_WALK)
            } else {
                maps.clients4(clients::MAX_WALK)
            };
            let picked = clients::pick(
                found
                    .into_iter()
                    .map(|(at, ifindex, mac, addr)| (at, Client { ifindex, mac, addr })),
                clients::MAX_CLIENTS,
            );
            let mut told = 0;
            for round in 0..clients::ROUNDS {
                if round > 0 {
                    std::thread::sleep(clients::ROUND_SPACING);
                }
                told = clients::paced(&picked.clients, |c| send(&senders, c));
            }
            log::info!(
                "takeover: told {told} of {} known {} clients the new owner directly{}",
                picked.clients.len(),
                if v6 { "IPv6" } else { "IPv4" },
                if picked.over_cap > 0 {
                    format!(
                        " ({} more over the cap of {})",
                        picked.over_cap,
                        clients::MAX_CLIENTS
                    )
                } else {
                    String::new()
                }
            );
            busy.store(false, Ordering::Release);
        });
    if let Err(e) = spawned {
        log::warn!("takeover notice thread: {e}");
    }
}

/// One client told every VIP of the family through its interface's socket; whether all
/// went out (a client on an interface we do not serve is skipped).
fn send(senders: &Senders, c: &Client) -> bool {
    match (senders, c.addr) {
        (Senders::Arp(socks, vips), IpAddr::V4(addr)) => {
            let Some((i, s)) = socks.iter().find(|(i, _)| i.index == c.ifindex) else {
                return false;
            };
            vips.iter()
                .map(|v| s.tell(i.mac, *v, c.mac, addr))
                .fold(true, |a, b| a & b)
        }
        (Senders::Ndp(socks, vips), IpAddr::V6(addr)) => {
            let Some((i, s)) = socks.iter().find(|(i, _)| i.index == c.ifindex) else {
                return false;
            };
            vips.iter()
                .map(|v| s.tell(i.mac, *v, c.mac, addr))
                .fold(true, |a, b| a & b)
        }
        _ => false,
    }
}
