//! The receiving thread: datagrams checked (signature, peer rules), dumps asked for, and
//! records installed into this node's `CONNTRACK`/`REVERSE` maps of either family.

use std::{
    collections::HashMap as StdHashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, MapData};
use lb_common::{
    BACKEND_FLAG_PRESENT, Backend, CtEntry, FlowKey, RevEntry, VipKey, VipMeta, ct_state,
};

use super::{
    FamilyMaps, Stats, bump,
    install::{self, Local, Skip},
    peer::{self, Verdict},
    random_u64,
    sender::stamp,
};
use crate::wire::{
    self,
    sync::{AnyRecord, DecodeError, Event, Header, Kind, Record, SyncKey, WireAddr},
};

/// `bpf_map_update_elem`'s "only if absent".
const BPF_NOEXIST: u64 = 1;

pub(super) struct Receiver {
    pub(super) key: SyncKey,
    pub(super) sock: Arc<UdpSocket>,
    pub(super) targets: Vec<SocketAddr>,
    /// Unicast peers: datagrams from anyone else are dropped unread.
    pub(super) peers_only: Vec<Ipv4Addr>,
    pub(super) own: Ipv4Addr,
    /// The group messages may be addressed to (multicast mode), besides `own`.
    pub(super) group: Option<Ipv4Addr>,
    pub(super) counter: Arc<AtomicU64>,
    /// An old-version datagram was logged (once: after that, only counted).
    pub(super) old_logged: bool,
    pub(super) epoch: u64,
    pub(super) port: u16,
    pub(super) v4: FamilyRx,
    pub(super) v6: FamilyRx<lb_common::Ip6>,
    pub(super) master: Arc<AtomicBool>,
    pub(super) stats: Arc<Mutex<Stats>>,
    pub(super) dumps: mpsc::SyncSender<(u64, SocketAddr)>,
    /// Senders a complete dump is still wanted from.
    pub(super) pending: std::collections::BTreeSet<Ipv4Addr>,
}

impl Receiver {
    pub(super) fn run(&mut self, stop: &AtomicBool) {
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
pub(super) struct FamilyRx<A = u32>
where
    FlowKey<A>: aya::Pod,
    CtEntry<A>: aya::Pod,
    RevEntry<A>: aya::Pod,
    VipKey<A>: aya::Pod,
    VipMeta<A>: aya::Pod,
    Backend<A>: aya::Pod,
{
    pub(super) conntrack: HashMap<MapData, FlowKey<A>, CtEntry<A>>,
    pub(super) reverse: HashMap<MapData, FlowKey<A>, RevEntry<A>>,
    pub(super) vips: HashMap<MapData, VipKey<A>, VipMeta<A>>,
    pub(super) backends: Array<MapData, Backend<A>>,
    pub(super) local: Local<A>,
    pub(super) local_at: Option<Instant>,
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
    pub(super) fn new(m: FamilyMaps<A>, ifindex: u32, snat_ports: (u16, u16)) -> Self {
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
        self.local.now_ns = crate::net::sys::monotonic_ns();
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
