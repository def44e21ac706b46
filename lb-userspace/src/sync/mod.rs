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
use lb_common::{
    BACKEND_FLAG_PRESENT, Backend, CtEntry, CtEntry6, FlowKey, FlowKey6, RevEntry,
    SYNC_COUNT_EMITTED, SYNC_COUNT_RING_FULL, SYNC_FAMILY_V6, SyncEvent, SyncEvent6, VipKey,
    VipMeta, ct_state,
};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::{
    config::sync::SyncSettings,
    wire::{self, sync::SyncKey},
};

use self::{
    install::{Local, Skip},
    peer::{Peers, Verdict},
};
use crate::wire::sync::{AnyRecord, DecodeError, Event, Header, Kind, Record, WireAddr};

/// `bpf_map_update_elem`'s "only if absent".
const BPF_NOEXIST: u64 = 1;

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
/// Dump datagrams sent back to back before a pause of [`DUMP_PAUSE`]: with 30 IPv4
/// records a datagram, some 11 MB/s at most (262,144 flows in about a second; IPv6 flows,
/// 14 a datagram, take about twice as long).
const DUMP_BURST: usize = 8;
const DUMP_PAUSE: Duration = Duration::from_millis(1);
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
    let mut tx = Sender {
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
    let mut rx = Receiver {
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
        v4: FamilyRx::new(v4, ifindex, settings.snat_ports),
        v6: FamilyRx::new(v6, ifindex, settings.snat_ports),
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

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the data path's `bpf_ktime_get_coarse_ns`
/// (which trails it by up to a tick).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Sender {
    key: SyncKey,
    sock: Arc<UdpSocket>,
    targets: Vec<SocketAddr>,
    /// This node's address: the sender named in its datagrams.
    own: Ipv4Addr,
    counter: Arc<AtomicU64>,
    epoch: u64,
    seq: u64,
    events: RingBuf<MapData>,
    counts: PerCpuArray<MapData, u64>,
    conntrack: HashMap<MapData, FlowKey, CtEntry>,
    conntrack6: HashMap<MapData, FlowKey6, CtEntry6>,
    stats: Arc<Mutex<Stats>>,
    /// Dump requests (nonce, who asked) from the receiver.
    dumps: mpsc::Receiver<(u64, SocketAddr)>,
    last_sent: Instant,
    master: Arc<AtomicBool>,
    /// When each requester last got a dump.
    answered: StdHashMap<SocketAddr, Instant>,
}

impl Sender {
    fn run(&mut self, stop: &AtomicBool) {
        let mut counted = Instant::now();
        let mut refreshed = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(BATCH_EVERY);
            self.flush();
            if let Ok((nonce, to)) = self.dumps.try_recv() {
                // One dump per requester every 5 s, a few to everyone together: no request
                // (a peer's retries, a key holder's flood) makes this node flood anyone.
                let now = Instant::now();
                self.answered
                    .retain(|_, t| now.duration_since(*t) < DUMP_ANSWER_EVERY);
                if self.answered.len() >= MAX_DUMPS_AT_ONCE {
                    bump(
                        &mut self.stats.lock().expect("poisoned").status.rejected,
                        "dump_rate",
                    );
                } else if let std::collections::hash_map::Entry::Vacant(e) = self.answered.entry(to)
                {
                    e.insert(now);
                    self.dump(Some((nonce, to)));
                }
            }
            // Only the master: a backup's copies are not seen by packets, so their ages
            // only grow.
            if refreshed.elapsed() >= REFRESH_EVERY {
                refreshed = Instant::now();
                if self.master.load(Ordering::Relaxed) {
                    self.dump(None);
                }
            }
            if self.last_sent.elapsed() >= HEARTBEAT_EVERY {
                self.send_records(&[]);
            }
            if counted.elapsed() >= Duration::from_secs(1) {
                counted = Instant::now();
                let sum = |i: u32| {
                    self.counts
                        .get(&i, 0)
                        .map(|v| v.iter().sum::<u64>())
                        .unwrap_or(0)
                };
                let (emitted, full) = (sum(SYNC_COUNT_EMITTED), sum(SYNC_COUNT_RING_FULL));
                let mut s = self.stats.lock().expect("poisoned");
                s.status.events = emitted;
                s.status.ring_full = full;
            }
        }
    }

    /// Everything in the ring buffer, sent.
    fn flush(&mut self) {
        let now = monotonic_ns();
        let mut records = Vec::new();
        while let Some(item) = self.events.next() {
            records.extend(record_of_event(&item, now));
        }
        for chunk in wire::sync::batches(&records) {
            self.send_records(chunk);
        }
    }

    fn send_records(&mut self, records: &[AnyRecord]) {
        self.seq += 1;
        let targets = self.targets.clone();
        for t in &targets {
            // Each peer its own datagram: the recipient is under the tag.
            let h = Header {
                kind: Kind::Records,
                last: false,
                epoch: self.epoch,
                seq: self.seq,
                nonce: 0,
                part: 0,
                ..stamp(self.own, t, &self.counter)
            };
            let b = wire::sync::encode(&self.key, &h, records);
            self.send(&b, *t, records.len());
        }
        self.last_sent = Instant::now();
    }

    fn send(&self, b: &[u8], to: SocketAddr, records: usize) {
        let ok = self.sock.send_to(b, to).is_ok();
        let mut s = self.stats.lock().expect("poisoned");
        if ok {
            s.status.sent_messages += 1;
            s.status.sent_records += records as u64;
            s.status.sent_bytes += b.len() as u64;
        } else {
            s.status.send_errors += 1;
        }
    }

    /// Every live confirmed flow, paced (new events keep flowing between bursts): as dump
    /// parts to whoever asked (`to`: its nonce and address), or as ordinary records to
    /// every peer (the periodic refresh).
    fn dump(&mut self, to: Option<(u64, SocketAddr)>) {
        let now = monotonic_ns();
        let mut records: Vec<AnyRecord> = self
            .conntrack
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, e)| install::record_of(Event::Confirmed, &k, &e, now))
            .map(AnyRecord::from)
            .collect();
        records.extend(
            self.conntrack6
                .iter()
                .filter_map(Result::ok)
                .filter_map(|(k, e)| install::record_of(Event::Confirmed, &k, &e, now))
                .map(AnyRecord::from),
        );
        let seq = self.seq;
        let chunks = wire::sync::batches(&records);
        for (i, chunk) in chunks.iter().enumerate() {
            if to.is_none() {
                self.send_records(chunk);
            }
            if (i + 1) % DUMP_BURST == 0 {
                std::thread::sleep(DUMP_PAUSE);
                self.flush();
            }
        }
        if let Some((nonce, addr)) = to {
            let base = Header {
                epoch: self.epoch,
                seq,
                nonce,
                ..stamp(self.own, &addr, &self.counter)
            };
            let parts = dump_parts(&self.key, &base, &self.counter, &records);
            for (i, (b, n)) in parts.iter().enumerate() {
                self.send(b, addr, *n);
                if (i + 1) % DUMP_BURST == 0 {
                    std::thread::sleep(DUMP_PAUSE);
                    self.flush();
                }
            }
        }
        match to {
            Some((_, addr)) => {
                self.stats.lock().expect("poisoned").status.dumps_sent += 1;
                log::info!("sync: sent a dump of {} flows to {addr}", records.len());
            }
            None => log::debug!("sync: refreshed {} flows", records.len()),
        }
    }
}

/// The record of one `SYNC_EVENTS` item (`SyncEvent` or `SyncEvent6` by its family), or
/// none (too short, an unknown kind, an expired entry).
pub fn record_of_event(item: &[u8], now_ns: u64) -> Option<AnyRecord> {
    fn read<A: Copy + Default>(ev: &lb_common::SyncEvent<A>, now_ns: u64) -> Option<Record<A>> {
        let event = Event::from_datapath(ev.kind)?;
        match event {
            Event::Confirmed => install::record_of(event, &ev.key, &ev.entry, now_ns),
            _ => Some(install::bare(event, &ev.key)),
        }
    }
    let family = u32::from_ne_bytes(item.get(4..8)?.try_into().ok()?);
    if family == SYNC_FAMILY_V6 {
        let ev: SyncEvent6 = bytemuck::pod_read_unaligned(item.get(..size_of::<SyncEvent6>())?);
        read(&ev, now_ns).map(AnyRecord::V6)
    } else {
        let ev: SyncEvent = bytemuck::pod_read_unaligned(item.get(..size_of::<SyncEvent>())?);
        read(&ev, now_ns).map(AnyRecord::V4)
    }
}

/// A header from `own` to `to` (its address; the group for multicast), stamped with the
/// wall clock and the epoch's next datagram number; the caller sets the rest.
fn stamp(own: Ipv4Addr, to: &SocketAddr, counter: &AtomicU64) -> Header {
    let recipient = match to {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    Header {
        kind: Kind::Records,
        last: false,
        epoch: 0,
        seq: 0,
        nonce: 0,
        part: 0,
        sender: own,
        recipient,
        time_ms: wire::sync::wall_ms(),
        counter: counter.fetch_add(1, Ordering::Relaxed),
    }
}

/// A dump as signed datagrams with their record counts: parts numbered from 0, the last
/// one flagged, each carrying `base`'s sender, recipient, the requester's nonce and the
/// sender's epoch and sequence number when the dump began, and a datagram number of its
/// own from `counter`. An empty dump is one empty last part.
pub fn dump_parts(
    key: &SyncKey,
    base: &Header,
    counter: &AtomicU64,
    records: &[AnyRecord],
) -> Vec<(Vec<u8>, usize)> {
    let chunks: Vec<&[AnyRecord]> = if records.is_empty() {
        vec![&[]]
    } else {
        wire::sync::batches(records)
    };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let h = Header {
                kind: Kind::DumpPart,
                last: i + 1 == n,
                part: i as u32,
                time_ms: wire::sync::wall_ms().max(base.time_ms),
                counter: if i == 0 {
                    base.counter
                } else {
                    counter.fetch_add(1, Ordering::Relaxed)
                },
                ..*base
            };
            (wire::sync::encode(key, &h, chunk), chunk.len())
        })
        .collect()
}

struct Receiver {
    key: SyncKey,
    sock: Arc<UdpSocket>,
    targets: Vec<SocketAddr>,
    /// Unicast peers: datagrams from anyone else are dropped unread.
    peers_only: Vec<Ipv4Addr>,
    own: Ipv4Addr,
    /// The group messages may be addressed to (multicast mode), besides `own`.
    group: Option<Ipv4Addr>,
    counter: Arc<AtomicU64>,
    /// An old-version datagram was logged (once: after that, only counted).
    old_logged: bool,
    epoch: u64,
    port: u16,
    v4: FamilyRx,
    v6: FamilyRx<lb_common::Ip6>,
    master: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    dumps: mpsc::SyncSender<(u64, SocketAddr)>,
    /// Senders a complete dump is still wanted from.
    pending: std::collections::BTreeSet<Ipv4Addr>,
}

fn bump(m: &mut BTreeMap<String, u64>, reason: &str) {
    *m.entry(reason.to_string()).or_default() += 1;
}

impl Receiver {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = [0u8; 2048];
        self.request(None);
        while !stop.load(Ordering::Relaxed) {
            match self.sock.recv_from(&mut buf) {
                Ok((n, SocketAddr::V4(from))) => self.handle(&buf[..n], *from.ip()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    log::warn!("sync socket: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            {
                let mut s = self.stats.lock().expect("poisoned");
                s.peers.expire(Instant::now(), wire::sync::wall_ms());
                // A forgotten peer's dump is no longer wanted.
                let peers = &s.peers.peers;
                self.pending.retain(|p| peers.contains_key(p));
            }
            // Dumps still wanted (a gap, a part lost): asked again, once a second each.
            for p in self.pending.clone() {
                self.request(Some(p));
            }
        }
    }

    fn reject(&self, reason: &str) {
        bump(
            &mut self.stats.lock().expect("poisoned").status.rejected,
            reason,
        );
    }

    /// Asks `to` (None: every peer) for a dump, at most once a second each.
    fn request(&mut self, to: Option<Ipv4Addr>) {
        let now = Instant::now();
        let nonce = {
            let mut s = self.stats.lock().expect("poisoned");
            if !s.peers.may_request(to, now) {
                return;
            }
            let nonce = random_u64();
            s.peers.requested(nonce, to, now);
            nonce
        };
        let targets = match to {
            Some(a) => vec![SocketAddrV4::new(a, self.port).into()],
            None => self.targets.clone(),
        };
        for t in targets {
            let h = Header {
                kind: Kind::DumpRequest,
                epoch: self.epoch,
                nonce,
                ..stamp(self.own, &t, &self.counter)
            };
            let b = wire::sync::encode(&self.key, &h, &[]);
            let _ = self.sock.send_to(&b, t);
        }
    }

    fn handle(&mut self, b: &[u8], from: Ipv4Addr) {
        if from == self.own {
            return;
        }
        if !self.peers_only.is_empty() && !self.peers_only.contains(&from) {
            return self.reject("not_peer");
        }
        let msg = match wire::sync::decode(&self.key, b) {
            Ok(m) => m,
            Err(DecodeError::BadTag) => return self.reject("bad_tag"),
            Err(DecodeError::Malformed) => return self.reject("malformed"),
            Err(DecodeError::OldVersion) => {
                if !std::mem::replace(&mut self.old_logged, true) {
                    log::warn!(
                        "sync: a version-1 datagram from {from} refused (that node runs an older \
                         xvip: upgrade every node of the group; further ones are only counted \
                         as old_version)"
                    );
                }
                return self.reject("old_version");
            }
        };
        if msg.header.epoch == self.epoch {
            return; // our own, looped back
        }
        // Who it is from is the sender under the tag, and only when that is its source.
        if let Err(reason) = peer::check(
            &msg.header,
            from,
            self.own,
            self.group,
            wire::sync::wall_ms(),
        ) {
            return self.reject(reason);
        }
        let from = msg.header.sender;
        let now = Instant::now();
        {
            let mut s = self.stats.lock().expect("poisoned");
            s.status.received_messages += 1;
            s.status.received_records += msg.records.len() as u64;
            s.peers.heard(from, now);
        }
        let verdict = match msg.header.kind {
            Kind::DumpRequest => {
                let v = self
                    .stats
                    .lock()
                    .expect("poisoned")
                    .peers
                    .dump_request(&msg.header);
                match v {
                    Verdict::Replay => self.reject("replay"),
                    Verdict::Unsynced => self.reject("request_flood"),
                    // Answered at the address it signed (which is where it came from). A
                    // full queue drops the request: the requester asks again.
                    _ => {
                        let _ = self.dumps.try_send((
                            msg.header.nonce,
                            SocketAddrV4::new(from, self.port).into(),
                        ));
                    }
                }
                return;
            }
            Kind::Records => {
                self.stats
                    .lock()
                    .expect("poisoned")
                    .peers
                    .records(from, &msg.header, now)
            }
            Kind::DumpPart => {
                let (v, done, incomplete) = self.stats.lock().expect("poisoned").peers.dump_part(
                    from,
                    &msg.header,
                    msg.records.len() as u64,
                    now,
                );
                if let Some(d) = done {
                    self.pending.remove(&d.from);
                    let mut s = self.stats.lock().expect("poisoned");
                    s.status.dumps_received += 1;
                    s.last_dump = Some(now);
                    log::info!("sync: dump of {} flows from {} received", d.records, d.from);
                }
                if incomplete {
                    self.pending.insert(from);
                    self.request(Some(from));
                }
                v
            }
        };
        match verdict {
            Verdict::Install => {}
            Verdict::InstallAndRequest { lost } => {
                log::warn!("sync: {lost} messages from {from} lost: asking for a full dump");
                self.pending.insert(from);
                self.request(Some(from));
            }
            Verdict::Replay => return self.reject("replay"),
            Verdict::UnknownNonce => return self.reject("unknown_nonce"),
            Verdict::Unsynced => {
                self.reject("unsynced");
                return self.request(Some(from));
            }
        }
        if msg.records.is_empty() {
            return;
        }
        self.v4.refresh_local(false);
        self.v6.refresh_local(false);
        let master = self.master.load(Ordering::Relaxed);
        let allowed = self.stats.lock().expect("poisoned").peers.allow_installs(
            from,
            msg.records.len() as u64,
            now,
        ) as usize;
        if allowed < msg.records.len() {
            let mut s = self.stats.lock().expect("poisoned");
            *s.status.skipped.entry("rate_limited".into()).or_default() +=
                (msg.records.len() - allowed) as u64;
        }
        for r in &msg.records[..allowed] {
            let outcome = match r {
                AnyRecord::V4(r) => self.v4.apply_fresh(r, master),
                AnyRecord::V6(r) => self.v6.apply_fresh(r, master),
            };
            let mut s = self.stats.lock().expect("poisoned");
            match outcome {
                Ok(()) => s.status.installed += 1,
                Err(e) => bump(&mut s.status.skipped, e.name()),
            }
        }
    }
}

/// The receiver's half for one family: its maps and what it knows of itself.
struct FamilyRx<A = u32>
where
    FlowKey<A>: aya::Pod,
    CtEntry<A>: aya::Pod,
    RevEntry<A>: aya::Pod,
    VipKey<A>: aya::Pod,
    VipMeta<A>: aya::Pod,
    Backend<A>: aya::Pod,
{
    conntrack: HashMap<MapData, FlowKey<A>, CtEntry<A>>,
    reverse: HashMap<MapData, FlowKey<A>, RevEntry<A>>,
    vips: HashMap<MapData, VipKey<A>, VipMeta<A>>,
    backends: Array<MapData, Backend<A>>,
    local: Local<A>,
    local_at: Option<Instant>,
}

impl<A> FamilyRx<A>
where
    A: WireAddr,
    FlowKey<A>: aya::Pod,
    CtEntry<A>: aya::Pod,
    RevEntry<A>: aya::Pod,
    VipKey<A>: aya::Pod,
    VipMeta<A>: aya::Pod,
    Backend<A>: aya::Pod,
{
    fn new(m: FamilyMaps<A>, ifindex: u32, snat_ports: (u16, u16)) -> Self {
        Self {
            conntrack: m.conntrack,
            reverse: m.reverse,
            vips: m.vips,
            backends: m.backends,
            local: Local {
                ifindex,
                snat_ports,
                ..Local::default()
            },
            local_at: None,
        }
    }

    /// Re-reads this node's VIPs and backends every second, or now when `force` (and the
    /// last read is 100 ms old); true when it read.
    fn refresh_local(&mut self, force: bool) -> bool {
        let age = self.local_at.map(|t| t.elapsed());
        let due = match age {
            None => true,
            Some(a) if force => a >= Duration::from_millis(100),
            Some(a) => a >= Duration::from_secs(1),
        };
        self.local.now_ns = monotonic_ns();
        if !due {
            return false;
        }
        self.local.vips = self.vips.iter().filter_map(Result::ok).collect();
        let mut backends = StdHashMap::new();
        for (i, b) in self.backends.iter().enumerate() {
            if let Ok(b) = b
                && b.flags & BACKEND_FLAG_PRESENT != 0
            {
                backends.insert((b.addr, b.port), (i as u32, b));
            }
        }
        self.local.backends = backends;
        self.local_at = Some(Instant::now());
        true
    }

    /// Whether this node has a live entry of its own for `key`.
    fn live(&self, key: &FlowKey<A>) -> Option<CtEntry<A>> {
        let e = self.conntrack.get(key, 0).ok()?;
        let t = install::timeout_ns(e.state)?;
        (e.last_seen_ns != 0 && self.local.now_ns.saturating_sub(e.last_seen_ns) <= t).then_some(e)
    }

    /// Whether a reverse entry is a live flow's (a tuple in use).
    fn live_rev(&self, rev: &RevEntry<A>) -> bool {
        install::timeout_ns(rev.state).is_some_and(|t| {
            rev.last_seen_ns != 0 && self.local.now_ns.saturating_sub(rev.last_seen_ns) <= t
        })
    }

    /// `apply`, once more after re-reading the VIPs and backends when it found either
    /// unknown (the maps may have changed since the last read: a reload, a new backend).
    fn apply_fresh(&mut self, r: &Record<A>, master: bool) -> Result<(), SkipReason> {
        let outcome = self.apply(r, master);
        if (outcome == Err(SkipReason::Skip(Skip::UnknownBackend))
            || outcome == Err(SkipReason::Skip(Skip::UnknownVip)))
            && self.refresh_local(true)
        {
            return self.apply(r, master);
        }
        outcome
    }

    fn apply(&mut self, r: &Record<A>, master: bool) -> Result<(), SkipReason> {
        let existing = self.live(&r.key);
        // The master is the node using its flows: another node's view never overwrites one.
        if master && existing.is_some() {
            return Err(SkipReason::OwnFlow);
        }
        let map_err = |_| SkipReason::MapError;
        match r.event {
            Some(Event::Confirmed) => {
                let (mut ct, rkey, mut rev) =
                    install::entries(r, &self.local).map_err(SkipReason::Skip)?;
                // Never take a tuple another live flow holds: its replies would go to this
                // record's client. Only a free, expired or this flow's own tuple is written
                // (free: with BPF_NOEXIST, so a flow the data path confirms onto it
                // meanwhile keeps it).
                let held = self.reverse.get(&rkey, 0).ok();
                if let Some(h) = &held
                    && !owns(h, &r.key)
                    && self.live_rev(h)
                {
                    return Err(SkipReason::TupleInUse);
                }
                let rev_flags = if held.is_none() { BPF_NOEXIST } else { 0 };
                if let Some(old) = existing {
                    // A copy of a copy (another backup's dump) is never fresher than what
                    // is here: last seen only moves forward.
                    ct.last_seen_ns = ct.last_seen_ns.max(old.last_seen_ns);
                    rev.last_seen_ns = ct.last_seen_ns;
                    let old_rkey = install::reverse_key(&r.key, &old);
                    if old_rkey != rkey {
                        self.drop_reverse(&old_rkey, &r.key);
                    }
                }
                // The tuple first, as the data path does: the flow holds it throughout.
                self.reverse
                    .insert(&rkey, &rev, rev_flags)
                    .map_err(|e| match e {
                        aya::maps::MapError::SyscallError(ref s)
                            if s.io_error.raw_os_error() == Some(libc::EEXIST) =>
                        {
                            SkipReason::TupleInUse
                        }
                        _ => SkipReason::MapError,
                    })?;
                self.conntrack.insert(&r.key, &ct, 0).map_err(map_err)?;
            }
            Some(Event::Closing) => {
                let Some(mut e) = existing else {
                    return Ok(());
                };
                e.state = ct_state::TCP_CLOSING;
                e.last_seen_ns = self.local.now_ns.max(1);
                let rkey = install::reverse_key(&r.key, &e);
                if let Ok(mut rev) = self.reverse.get(&rkey, 0)
                    && owns(&rev, &r.key)
                {
                    rev.state = ct_state::TCP_CLOSING;
                    rev.last_seen_ns = e.last_seen_ns;
                    self.reverse.insert(&rkey, &rev, 0).map_err(map_err)?;
                }
                self.conntrack.insert(&r.key, &e, 0).map_err(map_err)?;
            }
            Some(Event::Removed) => {
                let Ok(e) = self.conntrack.get(&r.key, 0) else {
                    return Ok(());
                };
                self.drop_reverse(&install::reverse_key(&r.key, &e), &r.key);
                let _ = self.conntrack.remove(&r.key);
            }
            None => return Err(SkipReason::Skip(Skip::BadState)),
        }
        Ok(())
    }

    fn drop_reverse(&mut self, rkey: &FlowKey<A>, key: &FlowKey<A>) {
        if let Ok(rev) = self.reverse.get(rkey, 0)
            && owns(&rev, key)
        {
            let _ = self.reverse.remove(rkey);
        }
    }
}

fn owns<A: PartialEq>(rev: &RevEntry<A>, key: &FlowKey<A>) -> bool {
    rev.client_addr == key.src_addr
        && rev.client_port == key.src_port
        && rev.vip_addr == key.dst_addr
        && rev.vip_port == key.dst_port
}

/// Why a record changed no map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SkipReason {
    Skip(Skip),
    /// This node is master and has the flow live.
    OwnFlow,
    /// The record's tuple (backend, SNAT address and port) is a live flow's.
    TupleInUse,
    /// A map write failed.
    MapError,
}

impl SkipReason {
    fn name(self) -> &'static str {
        match self {
            SkipReason::Skip(s) => s.name(),
            SkipReason::OwnFlow => "own_flow",
            SkipReason::TupleInUse => "tuple_in_use",
            SkipReason::MapError => "map_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_is_every_record_in_numbered_parts_ending_with_the_last() {
        let key = SyncKey::new(&[1; 32]);
        let rec = |i: u32| Record::<u32> {
            event: Some(Event::Confirmed),
            key: FlowKey {
                src_port: i as u16,
                proto: 6,
                ..FlowKey::default()
            },
            state: ct_state::TCP_ESTABLISHED,
            ..Record::default()
        };
        let rec6 = |i: u32| wire::sync::Record6 {
            event: Some(Event::Confirmed),
            key: FlowKey6 {
                src_addr: [0x20010db8u32.to_be(), 0, 0, i],
                src_port: i as u16,
                proto: 6,
                ..FlowKey6::default()
            },
            state: ct_state::TCP_ESTABLISHED,
            ..wire::sync::Record6::default()
        };
        // IPv4 only (30 a datagram), IPv6 only (14), and a mix (one in three IPv6).
        let v4 = |n: usize| {
            (0..n as u32)
                .map(|i| rec(i).into())
                .collect::<Vec<AnyRecord>>()
        };
        let v6 = |n: usize| {
            (0..n as u32)
                .map(|i| rec6(i).into())
                .collect::<Vec<AnyRecord>>()
        };
        let mix = |n: usize| {
            (0..n as u32)
                .map(|i| {
                    if i % 3 == 0 {
                        AnyRecord::from(rec6(i))
                    } else {
                        rec(i).into()
                    }
                })
                .collect::<Vec<_>>()
        };
        let m = wire::sync::MAX_RECORDS;
        let m6 = wire::sync::MAX_RECORDS6;
        for (records, want_parts) in [
            (v4(0), 1),
            (v4(1), 1),
            (v4(m), 1),
            (v4(m + 1), 2),
            (v4(1000), 1000usize.div_ceil(m)),
            (v6(m6), 1),
            (v6(m6 + 1), 2),
            (v6(1000), 1000usize.div_ceil(m6)),
            (mix(1000), wire::sync::batches(&mix(1000)).len()),
        ] {
            let n = records.len();
            let from = Ipv4Addr::new(192, 0, 2, 2);
            let base = Header {
                kind: Kind::DumpPart,
                last: false,
                epoch: 9,
                seq: 77,
                nonce: 5,
                part: 0,
                sender: from,
                recipient: Ipv4Addr::new(192, 0, 2, 3),
                time_ms: wire::sync::wall_ms(),
                counter: 100,
            };
            let counter = AtomicU64::new(101);
            let parts = dump_parts(&key, &base, &counter, &records);
            assert_eq!(parts.len(), want_parts, "{n} records");
            let mut back = Vec::new();
            let mut peers = Peers::default();
            let now = Instant::now();
            peers.requested(5, None, now);
            let mut done = None;
            let mut counters = std::collections::BTreeSet::new();
            for (i, (b, count)) in parts.iter().enumerate() {
                let m = wire::sync::decode(&key, b).expect("decodes");
                assert_eq!(m.header.kind, Kind::DumpPart);
                assert_eq!((m.header.part, m.header.nonce), (i as u32, 5));
                assert_eq!((m.header.epoch, m.header.seq), (9, 77));
                assert_eq!(
                    (m.header.sender, m.header.recipient),
                    (from, base.recipient)
                );
                assert!(counters.insert(m.header.counter), "a datagram number once");
                assert_eq!(m.header.last, i + 1 == parts.len());
                assert_eq!(m.records.len(), *count);
                assert!(b.len() <= wire::sync::MAX_DATAGRAM);
                let (v, d, _) = peers.dump_part(from, &m.header, *count as u64, now);
                assert_eq!(v, Verdict::Install);
                done = done.or(d);
                back.extend(m.records);
            }
            assert_eq!(back, records, "{n} records");
            assert_eq!(
                done.map(|d| d.records),
                Some(n as u64),
                "the receiver sees it complete"
            );
            // Synced at the dump's sequence number: the next message is 78.
            let h = Header {
                kind: Kind::Records,
                last: false,
                epoch: 9,
                seq: 78,
                ..base
            };
            assert_eq!(peers.records(from, &h, now), Verdict::Install);
        }
    }

    #[test]
    fn ring_items_of_both_families_become_their_records() {
        let now = 10_000_000_000;
        let mut e4 = SyncEvent {
            kind: lb_common::SYNC_CONFIRMED,
            family: lb_common::SYNC_FAMILY_V4,
            ..SyncEvent::default()
        };
        e4.key.src_port = 7;
        e4.entry.state = ct_state::TCP_ESTABLISHED;
        e4.entry.last_seen_ns = now - 3_000_000;
        let mut e6 = SyncEvent6 {
            kind: lb_common::SYNC_CLOSING,
            family: SYNC_FAMILY_V6,
            ..SyncEvent6::default()
        };
        e6.key.src_addr = [1, 2, 3, 4];
        match record_of_event(bytemuck::bytes_of(&e4), now) {
            Some(AnyRecord::V4(r)) => {
                assert_eq!(
                    (r.event, r.key, r.age_ms),
                    (Some(Event::Confirmed), e4.key, 3)
                );
            }
            r => panic!("{r:?}"),
        }
        match record_of_event(bytemuck::bytes_of(&e6), now) {
            Some(AnyRecord::V6(r)) => assert_eq!((r.event, r.key), (Some(Event::Closing), e6.key)),
            r => panic!("{r:?}"),
        }
        // Cut short, or an unknown kind: nothing.
        assert_eq!(record_of_event(&bytemuck::bytes_of(&e6)[..72], now), None);
        assert_eq!(record_of_event(&[0; 7], now), None);
        e4.kind = 9;
        assert_eq!(record_of_event(bytemuck::bytes_of(&e4), now), None);
    }
}
