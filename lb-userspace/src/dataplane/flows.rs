//! Reading the flow maps off the main loop: the clients a takeover notice goes to, and the
//! entry counts the status and the flood guard show.

use aya::maps::{HashMap, MapData};
use lb_common::{CtEntry, FlowKey};

use super::family::Family;

/// The confirmed-flow maps as the takeover notice reads them (`Dataplane::client_maps`).
pub struct ClientMaps {
    pub(super) v4: HashMap<MapData, FlowKey, CtEntry>,
    pub(super) v6: Option<HashMap<MapData, lb_common::FlowKey6, lb_common::CtEntry6>>,
}

/// A client as a flow entry names it: (last seen, interface index, MAC, address).
pub type FlowClient = (u64, u32, [u8; 6], std::net::IpAddr);

impl ClientMaps {
    /// The clients of at most `max_walk` IPv4 flows (one syscall per entry: call it off the
    /// main loop).
    pub fn clients4(&self, max_walk: usize) -> Vec<FlowClient> {
        clients(&self.v4, max_walk)
    }

    /// The same for the IPv6 flows (none when the map is not there).
    pub fn clients6(&self, max_walk: usize) -> Vec<FlowClient> {
        self.v6
            .as_ref()
            .map_or_else(Vec::new, |m| clients(m, max_walk))
    }
}

/// The clients of at most `max_walk` flows of one family's confirmed-flow map.
fn clients<A: Family>(
    map: &HashMap<MapData, FlowKey<A>, CtEntry<A>>,
    max_walk: usize,
) -> Vec<FlowClient>
where
    FlowKey<A>: aya::Pod,
    CtEntry<A>: aya::Pod,
{
    map.iter()
        .take(max_walk)
        .filter_map(Result::ok)
        .map(|(k, e)| {
            (
                e.last_seen_ns,
                e.client_ifindex,
                e.client_mac,
                k.src_addr.ip(),
            )
        })
        .collect()
}

/// Counts `map`'s entries every `every`, storing the result in `out`, until `out` is the
/// only reference left. Runs on a blocking thread: a walk of a million entries takes a
/// second or so and must not delay health transitions.
pub fn count_conntrack(
    map: HashMap<MapData, FlowKey, CtEntry>,
    out: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    every: std::time::Duration,
) {
    std::thread::spawn(move || {
        while std::sync::Arc::strong_count(&out) > 1 {
            let n = map.keys().filter(|k| k.is_ok()).count();
            out.store(n, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(every);
        }
    });
}

/// Like [`count_conntrack`], counting only entries seen within `lifetime` (an LRU map keeps
/// expired entries until it needs the room): for the small `UNCONFIRMED` map, whose live
/// count is what tells a flood.
pub fn count_live(
    map: HashMap<MapData, FlowKey, CtEntry>,
    lifetime: std::time::Duration,
    out: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    every: std::time::Duration,
) {
    std::thread::spawn(move || {
        while std::sync::Arc::strong_count(&out) > 1 {
            let now = crate::net::sys::monotonic_ns();
            let n = map
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, e)| now.saturating_sub(e.last_seen_ns) <= lifetime.as_nanos() as u64)
                .count();
            out.store(n, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(every);
        }
    });
}
