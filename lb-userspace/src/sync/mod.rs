//! Conntrack sync between the nodes of a VRRP group (`--sync-key-file`): the data path
//! writes a `SyncEvent` when a flow is confirmed, starts closing or is removed
//! (`lb-ebpf/src/sync.rs`); this module sends them, batched every 10 ms and authenticated,
//! to the other nodes (the VRRP peers, or UDP multicast to 224.0.0.18 on the VRRP
//! interface), and installs what the others send into this node's `CONNTRACK` and
//! `REVERSE` (an IPv6 flow's into `CONNTRACK6` and `REVERSE6`), so the node that takes the
//! VIP over already knows every flow in both directions. Design and measurements:
//! `docs/failover.md`.
//!
//! - `crate::wire::sync`: the datagrams (header naming sender, recipient and time; records encrypted
//!   and authenticated with ChaCha20-Poly1305 under a per-sender, per-epoch HKDF key);
//! - `peer`: what an authenticated message may do (signed sender = UDP source, recipient,
//!   freshness, epochs, sequence numbers, gaps, dump requests and their nonces, the
//!   bounded peer table, per-peer install budget);
//! - `install`: a record in the receiver's terms (its VIP index, backend slot, interface,
//!   clock) and a local entry as a record;
//! - here: the socket, and two threads: the sender (ring buffer, batches, heartbeats,
//!   dumps) and the receiver (checks, map writes); the key file and the settings are
//!   `config::sync`. Plain threads: every map operation is a syscall, and none of it may
//!   wait behind the daemon's state lock.

pub mod install;
pub mod peer;
pub mod receiver;
pub mod sender;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use lb_common::{Backend, CtEntry, CtEntry6, FlowKey, FlowKey6, RevEntry, VipKey, VipMeta};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::config::sync::SyncSettings;

use self::peer::Peers;

/// Multicast group without unicast peers: VRRP's own (link-local, never routed).
pub const SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Records wait at most this long before they are sent.
pub const BATCH_EVERY: Duration = Duration::from_millis(10);
/// An empty records message after this long without any: receivers see the sender alive
/// and notice a lost last message (a gap) within this.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Every live flow is sent again this often (paced like a dump): a receiver's copy is
/// refreshed with the sender's age of the flow, so it expires as the sender's does, not a
/// fixed idle timeout after the flow was confirmed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// A requester gets one dump this often at most (its retries come every second: a
/// replayed or looping request costs one dump per 5 s, not one a second).
pub const DUMP_ANSWER_EVERY: Duration = Duration::from_secs(5);
/// Dumps sent to all requesters together within [`DUMP_ANSWER_EVERY`] at most.
pub const MAX_DUMPS_AT_ONCE: usize = 8;

/// One family's maps the receiver reads and writes (`A`: `u32`, or `Ip6` for `VIPS6`,
/// `BACKENDS6`, `CONNTRACK6`, `REVERSE6`).
pub struct FamilyMaps<A = u32>
where
    FlowKey<A>: aya::Pod,
    CtEntry<A>: aya::Pod,
    RevEntry<A>: aya::Pod,
    VipKey<A>: aya::Pod,
    VipMeta<A>: aya::Pod,
    Backend<A>: aya::Pod,
{
    pub conntrack: HashMap<MapData, FlowKey<A>, CtEntry<A>>,
    pub reverse: HashMap<MapData, FlowKey<A>, RevEntry<A>>,
    pub vips: HashMap<MapData, VipKey<A>, VipMeta<A>>,
    pub backends: Array<MapData, Backend<A>>,
}

/// The maps sync uses, as handles of its own.
pub struct SyncMaps {
    pub events: RingBuf<MapData>,
    pub counts: PerCpuArray<MapData, u64>,
    /// Read by the sender (dumps).
    pub conntrack_dump: HashMap<MapData, FlowKey, CtEntry>,
    pub conntrack6_dump: HashMap<MapData, FlowKey6, CtEntry6>,
    /// Written by the receiver.
    pub v4: FamilyMaps,
    pub v6: FamilyMaps<lb_common::Ip6>,
}

/// One sender as `xvip status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncPeerStatus {
    pub address: String,
    /// A dump from it has been received (its records are installed).
    pub synced: bool,
    /// Milliseconds since its last message (heartbeats every second).
    pub lag_ms: Option<u64>,
    /// Messages found missing in its sequence.
    pub lost_messages: u64,
    /// Seconds since its last complete dump, and that dump's records.
    pub last_dump_s: Option<f64>,
    pub last_dump_records: u64,
}

/// Conntrack sync (absent without `--sync-key-file`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStatus {
    /// `multicast 224.0.0.18:8849` or `unicast to ...`.
    pub transport: String,
    pub peers: Vec<SyncPeerStatus>,
    /// Events the data path wrote, and lost to a full ring buffer.
    pub events: u64,
    pub ring_full: u64,
    pub sent_messages: u64,
    pub sent_records: u64,
    pub sent_bytes: u64,
    pub send_errors: u64,
    pub received_messages: u64,
    pub received_records: u64,
    /// Records written into the maps (installed, closed or removed).
    pub installed: u64,
    /// Messages rejected, by reason (`bad_tag`, `malformed`, `old_version`,
    /// `source_mismatch`, `wrong_recipient`, `stale`, `replay`, `unsynced`,
    /// `unknown_nonce`, `not_peer`, `request_flood`, `dump_rate`).
    pub rejected: BTreeMap<String, u64>,
    /// Records not installed, by reason (see `install::Skip`, plus `own_flow`,
    /// `tuple_in_use`, `rate_limited`, `map_error`).
    pub skipped: BTreeMap<String, u64>,
    /// Dumps sent (answers to requests) and received complete.
    pub dumps_sent: u64,
    pub dumps_received: u64,
    /// Seconds since the last complete dump received.
    pub last_full_dump_s: Option<f64>,
}

/// Counters behind [`SyncStatus`].
#[derive(Debug, Default)]
struct Stats {
    status: SyncStatus,
    peers: Peers,
    last_dump: Option<Instant>,
}

/// The running sync.
pub struct SyncHandle {
    master: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
}

impl SyncHandle {
    /// Tells sync whether this node is VRRP master (it then never overwrites a live flow of
    /// its own with another node's record).
    pub fn set_master(&self, master: bool) {
        self.master.store(master, Ordering::Relaxed);
    }

    /// The status as now.
    pub fn status(&self) -> SyncStatus {
        let s = self.stats.lock().expect("poisoned");
        let now = Instant::now();
        let mut st = s.status.clone();
        st.peers = s
            .peers
            .peers
            .iter()
            .map(|(a, p)| SyncPeerStatus {
                address: a.to_string(),
                synced: p.synced.is_some(),
                lag_ms: p
                    .last_message
                    .map(|t| now.duration_since(t).as_millis() as u64),
                lost_messages: p.lost,
                last_dump_s: p
                    .last_dump
                    .map(|(t, _)| now.duration_since(t).as_secs_f64()),
                last_dump_records: p.last_dump.map_or(0, |(_, n)| n),
            })
            .collect();
        st.last_full_dump_s = s.last_dump.map(|t| now.duration_since(t).as_secs_f64());
        st
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Errors of setting sync up.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync socket on {interface} port {port}: {reason}")]
    Socket {
        interface: String,
        port: u16,
        reason: String,
    },
}

fn socket(iface: &str, addr: Ipv4Addr, s: &SyncSettings) -> Result<UdpSocket, SyncError> {
    let err = |e: std::io::Error| SyncError::Socket {
        interface: iface.into(),
        port: s.port,
        reason: e.to_string(),
    };
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(err)?;
    sock.set_reuse_address(true).map_err(err)?;
    sock.bind_device(Some(iface.as_bytes())).map_err(err)?;
    sock.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, s.port)).into())
        .map_err(err)?;
    if s.peers.is_empty() {
        sock.join_multicast_v4(&SYNC_GROUP, &addr).map_err(err)?;
        sock.set_multicast_if_v4(&addr).map_err(err)?;
        sock.set_multicast_loop_v4(false).map_err(err)?;
        sock.set_multicast_ttl_v4(1).map_err(err)?;
    }
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(err)?;
    Ok(sock.into())
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source");
    u64::from_ne_bytes(b)
}

/// Starts the sender and the receiver on `iface` (its index `ifindex`, its address `addr`).
///
/// # Errors
/// [`SyncError`] when the socket cannot be set up.
pub fn spawn(
    settings: &SyncSettings,
    iface: &str,
    ifindex: u32,
    addr: Ipv4Addr,
    maps: SyncMaps,
) -> Result<SyncHandle, SyncError> {
    let sock = Arc::new(socket(iface, addr, settings)?);
    let targets: Vec<SocketAddr> = if settings.peers.is_empty() {
        vec![SocketAddrV4::new(SYNC_GROUP, settings.port).into()]
    } else {
        settings
            .peers
            .iter()
            .map(|p| SocketAddrV4::new(*p, settings.port).into())
            .collect()
    };
    let stats = Arc::new(Mutex::new(Stats::default()));
    stats.lock().expect("poisoned").status.transport = if settings.peers.is_empty() {
        format!("multicast {SYNC_GROUP}:{} on {iface}", settings.port)
    } else {
        format!("unicast to {:?} port {}", settings.peers, settings.port)
    };
    let master = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = random_u64();
    // The datagram counter of this epoch (both threads send): the AEAD nonce.
    let counter = Arc::new(AtomicU64::new(0));
    let (dump_tx, dump_rx) = mpsc::sync_channel::<(u64, SocketAddr)>(16);
    let SyncMaps {
        events,
        counts,
        conntrack_dump,
        conntrack6_dump,
        v4,
        v6,
    } = maps;
    let mut tx = sender::Sender {
        key: settings.key.clone(),
        sock: sock.clone(),
        targets: targets.clone(),
        own: addr,
        counter: counter.clone(),
        epoch,
        seq: 0,
        events,
        counts,
        conntrack: conntrack_dump,
        conntrack6: conntrack6_dump,
        stats: stats.clone(),
        dumps: dump_rx,
        last_sent: Instant::now(),
        master: master.clone(),
        answered: StdHashMap::new(),
    };
    let mut rx = receiver::Receiver {
        key: settings.key.clone(),
        sock,
        targets,
        peers_only: settings.peers.clone(),
        own: addr,
        group: settings.peers.is_empty().then_some(SYNC_GROUP),
        counter,
        old_logged: false,
        epoch,
        port: settings.port,
        v4: receiver::FamilyRx::new(v4, ifindex, settings.snat_ports),
        v6: receiver::FamilyRx::new(v6, ifindex, settings.snat_ports),
        master: master.clone(),
        stats: stats.clone(),
        dumps: dump_tx,
        pending: Default::default(),
    };
    let (s1, s2) = (stop.clone(), stop.clone());
    std::thread::Builder::new()
        .name("sync-send".into())
        .spawn(move || tx.run(&s1))
        .expect("thread");
    std::thread::Builder::new()
        .name("sync-recv".into())
        .spawn(move || rx.run(&s2))
        .expect("thread");
    Ok(SyncHandle {
        master,
        stats,
        stop,
    })
}

fn bump(m: &mut BTreeMap<String, u64>, reason: &str) {
    *m.entry(reason.to_string()).or_default() += 1;
}
