//! After a takeover, the clients this node knows of (the flow table, synced flows
//! included) are told the new owner directly: a unicast ARP reply or neighbour
//! advertisement to each, besides the broadcast announcements. A client that ignores
//! gratuitous ARP (or whose switch drops it), or whose entry for the VIP is fresh, would
//! otherwise keep sending to the old owner until its own timers run out (docs/failover.md).
//!
//! The choice of whom to tell is pure ([`pick`]); the walk of the map and the sending are
//! the daemon's. Cost is bounded per takeover: at most [`MAX_WALK`] flow entries read,
//! [`MAX_CLIENTS`] link-layer addresses told, [`PER_SECOND`] frames a second.

use std::{collections::HashSet, net::IpAddr, time::Duration};

/// Flow entries read per takeover (the map may hold millions; the most recent clients are
/// what matters, and an LRU map gives no order, so this bounds the walk, not the choice).
pub const MAX_WALK: usize = 262_144;
/// Distinct clients (interface, MAC) told per takeover: a segment's hosts and routers.
pub const MAX_CLIENTS: usize = 4096;
/// Frames sent per second at most (per family).
pub const PER_SECOND: usize = 2000;
/// Frames sent back to back before a pause of [`BATCH_PAUSE`].
pub const BATCH: usize = 50;
/// `BATCH` frames per pause: `PER_SECOND`.
pub const BATCH_PAUSE: Duration = Duration::from_millis((1000 * BATCH / PER_SECOND) as u64);
/// Rounds per takeover, this far apart: Linux takes a reply that changes a neighbour's
/// address only when the entry is older than `locktime` (1 s by default), so a client that
/// resolved the VIP just before the takeover ignores the first round but not the second.
pub const ROUNDS: u32 = 2;
pub const ROUND_SPACING: Duration = Duration::from_millis(1100);

/// One client to tell: where it sits and one of its addresses (the reply's target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub addr: IpAddr,
}

/// What a walk of the flow table found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Picked {
    /// Most recently seen first, one per (interface, MAC).
    pub clients: Vec<Client>,
    /// Distinct clients left out by [`MAX_CLIENTS`].
    pub over_cap: usize,
}

/// Whom to tell, from flow entries `(last seen, client)`: one per interface and MAC (a
/// router in front of many clients is told once), the most recently seen first, at most
/// `max`; multicast and zero MACs (never a client's source) are skipped.
pub fn pick(entries: impl IntoIterator<Item = (u64, Client)>, max: usize) -> Picked {
    let mut all: Vec<(u64, Client)> = entries
        .into_iter()
        .filter(|(_, c)| c.mac[0] & 1 == 0 && c.mac != [0; 6] && c.ifindex != 0)
        .collect();
    all.sort_by_key(|a| std::cmp::Reverse(a.0));
    let mut seen = HashSet::new();
    let mut clients = Vec::new();
    let mut over_cap = 0;
    for (_, c) in all {
        if !seen.insert((c.ifindex, c.mac)) {
            continue;
        }
        if clients.len() < max {
            clients.push(c);
        } else {
            over_cap += 1;
        }
    }
    Picked { clients, over_cap }
}

/// Calls `send` for each client, [`BATCH`] at a time with [`BATCH_PAUSE`] between
/// batches; returns how many sends succeeded. Blocks: run it on a thread of its own.
pub fn paced(clients: &[Client], mut send: impl FnMut(&Client) -> bool) -> usize {
    let mut ok = 0;
    for (i, chunk) in clients.chunks(BATCH).enumerate() {
        if i > 0 {
            std::thread::sleep(BATCH_PAUSE);
        }
        ok += chunk.iter().filter(|c| send(c)).count();
    }
    ok
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn c(ifindex: u32, last: u8, ip: u8) -> Client {
        Client {
            ifindex,
            mac: [2, 0, 0, 0, 0, last],
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, ip)),
        }
    }

    #[test]
    fn one_per_interface_and_mac_newest_first_and_bad_macs_skipped() {
        let router = c(2, 1, 50);
        let p = pick(
            [
                (10, router),
                (
                    30,
                    Client {
                        addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
                        ..router
                    },
                ),
                (20, c(2, 2, 10)),
                (40, c(3, 1, 60)),
                (
                    50,
                    Client {
                        mac: [0xff; 6],
                        ..c(2, 9, 9)
                    },
                ),
                (
                    50,
                    Client {
                        mac: [0x33, 0x33, 0, 0, 0, 1],
                        ..c(2, 9, 9)
                    },
                ),
                (
                    50,
                    Client {
                        mac: [0; 6],
                        ..c(2, 9, 9)
                    },
                ),
                (50, c(0, 8, 8)),
            ],
            MAX_CLIENTS,
        );
        assert_eq!(p.over_cap, 0);
        let got: Vec<_> = p.clients.iter().map(|x| (x.ifindex, x.mac[5])).collect();
        assert_eq!(
            got,
            [(3, 1), (2, 1), (2, 2)],
            "the same MAC on two interfaces is two clients"
        );
        assert_eq!(
            p.clients[1].addr,
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            "the router's most recent flow names it"
        );
    }

    #[test]
    fn the_cap_keeps_the_most_recent_and_counts_the_rest() {
        let entries = (0..100u8).map(|i| (u64::from(i), c(2, i, i)));
        let p = pick(entries, 10);
        assert_eq!(p.clients.len(), 10);
        assert_eq!(p.over_cap, 90);
        assert!(p.clients.iter().all(|x| x.mac[5] >= 90), "{p:?}");
    }

    #[test]
    fn pacing_sends_every_client_in_batches_at_the_rate() {
        let clients: Vec<Client> = (0..120u8).map(|i| c(2, i, i)).collect();
        let start = std::time::Instant::now();
        let mut sent = Vec::new();
        let ok = paced(&clients, |x| {
            sent.push(x.mac[5]);
            x.mac[5] % 2 == 0
        });
        assert_eq!(sent.len(), 120);
        assert_eq!(ok, 60, "failed sends are not counted");
        // Three batches: two pauses at least.
        assert!(start.elapsed() >= BATCH_PAUSE * 2, "{:?}", start.elapsed());
        assert_eq!(BATCH_PAUSE, Duration::from_millis(25));
    }
}
