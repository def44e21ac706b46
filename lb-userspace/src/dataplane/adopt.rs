//! What a pinned map left by an earlier xvip may differ in and still be replaced rather
//! than refused: the IPv6 flow maps' idle size, and the counter maps' shape.

use std::path::Path;

use lb_common::{Counters, map_names};

use super::IDLE_V6_FLOWS;

/// The IPv6 flow maps and their sizes: as IPv4's with IPv6 VIPs, else [`IDLE_V6_FLOWS`].
pub(super) fn v6_flow_sizes(conntrack_size: u32, ipv6: bool) -> [(&'static str, u32); 4] {
    let (confirmed, unconfirmed) = if ipv6 {
        (conntrack_size, lb_common::UNCONFIRMED_SIZE)
    } else {
        (IDLE_V6_FLOWS, IDLE_V6_FLOWS)
    };
    [
        (map_names::CONNTRACK6, confirmed),
        (map_names::REVERSE6, confirmed),
        (map_names::UNCONFIRMED6, unconfirmed),
        (map_names::UNCONFIRMED_REV6, unconfirmed),
    ]
}

/// Unpins an IPv6 flow map pinned at another size when one of the two sizes is the idle
/// one (the first IPv6 VIP added, or the last removed): the pinned map holds no flow of a
/// configured IPv6 VIP, and adopting it would fail on its size. Any other size difference
/// is left to the loader, which refuses it like IPv4's.
pub(super) fn resize_idle_v6_pins(dir: &Path, sizes: &[(&'static str, u32)]) {
    for (name, want) in sizes {
        let path = dir.join(name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        let have = info.max_entries();
        if have != *want && (have == IDLE_V6_FLOWS || *want == IDLE_V6_FLOWS) {
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!(
                    "{name}: {have} -> {want} entries (IPv6 VIPs {}); the pinned map is replaced",
                    if *want == IDLE_V6_FLOWS {
                        "removed"
                    } else {
                        "added"
                    }
                ),
                Err(e) => log::warn!("{name}: cannot unpin {}: {e}", path.display()),
            }
        }
    }
}

/// The counter maps: what this build's program counts (drop and pass reasons, per VIP, per
/// backend, the handshakes of passive health), as (name, entries, value size).
fn counter_maps() -> [(&'static str, u32, u32); 4] {
    let size = |n: usize| n as u32;
    [
        (
            map_names::REASONS,
            lb_common::stats::REASON_COUNT,
            size(std::mem::size_of::<u64>()),
        ),
        (
            map_names::VIP_STATS,
            lb_common::MAX_VIPS,
            size(std::mem::size_of::<Counters>()),
        ),
        (
            map_names::BACKEND_STATS,
            lb_common::MAX_BACKENDS,
            size(std::mem::size_of::<Counters>()),
        ),
        (
            map_names::PASSIVE,
            lb_common::MAX_BACKENDS,
            size(std::mem::size_of::<lb_common::Passive>()),
        ),
    ]
}

/// A pinned counter map of another shape than this build's (an upgrade that counts a new
/// reason, or a counter struct that grew) is replaced, its counts starting from zero, instead
/// of refusing to adopt the pins: the flows, tables and links are the state an upgrade must
/// keep; the counters are statistics, and Prometheus takes a counter reset in its stride.
/// The maps that hold state still refuse a mismatch (`PinnedMismatch`).
pub(super) fn replace_changed_counter_pins(dir: &Path) {
    for (name, entries, value_size) in counter_maps() {
        let path = dir.join(name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        let (have_entries, have_size) = (info.max_entries(), info.value_size());
        if (have_entries, have_size) == (entries, value_size) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!(
                "{name}: the pinned counters ({have_entries} x {have_size} bytes) are of another xvip version ({entries} x {value_size} here): replaced, they count from zero"
            ),
            Err(e) => log::warn!("{name}: cannot unpin {}: {e}", path.display()),
        }
    }
}
